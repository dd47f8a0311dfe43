"""nn.Linear with float32 weights on the CPU: a few rows through our kernel, more through oneDNN.

torch's F.linear in float32 goes to MKL's sgemm, which on this AMD CPU ran 2-4x slower than oneDNN
on the same weight (BENCHMARKS.md, issue 14; MKL picks slower code paths on non-Intel CPUs):
a 300 x 1536 x 17920 prefill matmul 136 ms vs 62, the 151936-row LM head at one row 46.7 ms vs
24.3. So, by rows M of the input:
  - M <= MAX_M: quant/vnni.py's f32_mm (one weight row at a time, or 4 x 4 register tiles);
  - above: oneDNN's linear (`torch.ops.mkldnn._linear_pointwise`) on the plain weight: no packed
    copy, no second weight in memory;
  - where either is unavailable (no kernel library, a torch without that op, or one whose result
    the load-time probe finds off): F.linear, the reference.
All three multiply the same float32 numbers; only the order of the float32 sums differs (tests
compare them within 1e-5 relative). The weight Parameter is the original one (a tied head stays tied).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ..quant import vnni

# Largest M for f32_mm. 2 threads, idle 2-core Zen 5 VM, best of 7, 2026-11-30 (ours / oneDNN /
# F.linear, ms): 17920 x 1536 M=1 2.45 / 2.86 / 5.77, M=8 4.24 / 4.15 / 13.69, M=16 5.10 / 4.94 /
# 15.96; 151936 x 1536 M=1 23.6 / 24.3 / 46.7, M=8 31.7 / 32.8 / 112.6, M=32 61.8 / 55.5 / 146.8.
MAX_M = 8


@functools.lru_cache(maxsize=None)
def onednn_problem() -> str | None:
    """None when oneDNN's float32 linear runs here and agrees with F.linear, else why not."""
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return "this torch has no oneDNN linear (torch.ops.mkldnn._linear_pointwise)"
    g = torch.Generator().manual_seed(0)
    try:
        for m, k, n in ((1, 64, 48), (37, 96, 80), (300, 128, 136)):
            x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
            got, want = op(x, w, b, "none", [], ""), F.linear(x, w, b)
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5, atol=1e-5):
                return "oneDNN's linear disagreed with F.linear on the load-time probe"
    except Exception as e:  # noqa: BLE001 - any failure of the probe keeps F.linear
        return f"oneDNN's linear failed on the load-time probe: {type(e).__name__}: {e}"
    return None


def onednn_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x (M, K) @ w (N, K)^T + b through oneDNN, on the plain weight."""
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


class F32Linear(nn.Linear):
    """Built by `use_f32_kernels_` from an nn.Linear (shares its Parameters)."""

    max_m = MAX_M
    small = True  # quant/vnni.py's kernel for M <= max_m (its library loads)
    onednn = True  # oneDNN above (the probe passed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or self.weight.dtype != torch.float32:
            return F.linear(x, self.weight, self.bias)
        x2 = x.reshape(-1, self.in_features)
        m = x2.shape[0]
        if self.small and 0 < m <= self.max_m:
            y = vnni.f32_mm(x2, self.weight)
            if self.bias is not None:
                y += self.bias
        elif self.onednn and m > 0:
            y = onednn_linear(x2.contiguous(), self.weight, self.bias)
        else:
            return F.linear(x, self.weight, self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)


def _swap(old: nn.Linear, small: bool, onednn: bool) -> F32Linear:
    new = F32Linear.__new__(F32Linear)
    nn.Module.__init__(new)
    new.in_features, new.out_features = old.in_features, old.out_features
    new.weight = old.weight  # the same Parameter: ties and memory unchanged
    new.bias = old.bias
    new.small, new.onednn = small, onednn
    return new


def use_f32_kernels_(model: nn.Module, mode: str = "auto") -> dict:
    """Swaps every CPU nn.Linear with a contiguous float32 weight for an F32Linear (our kernel for
    few rows where in_features % 16 == 0, oneDNN for more); returns {"kernel", "layers", "max_m",
    "small", "onednn"} with the reason for any part that is off. mode as EngineConfig.cpu_kernels:
    "torch" keeps F.linear everywhere."""
    if mode not in vnni.MODES:
        raise ValueError(f"cpu_kernels must be one of {vnni.MODES}, got {mode!r}")
    if mode == "torch":
        return {"kernel": "torch", "layers": 0, "reason": "cpu_kernels='torch'"}
    small_why, onednn_why = vnni.problem(), onednn_problem()
    if small_why is not None and mode == "vnni":
        raise ValueError(f"cpu_kernels='vnni' but our CPU kernels cannot run here: {small_why}; use 'auto' or 'torch'")
    if small_why is not None and onednn_why is not None:
        return {"kernel": "torch", "layers": 0, "reason": f"{small_why}; {onednn_why}"}
    names = [n for n, m in model.named_modules()
             if type(m) is nn.Linear and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32
             and m.weight.is_contiguous()]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        old = getattr(owner, child)
        setattr(owner, child, _swap(old, small_why is None and old.in_features % 16 == 0, onednn_why is None))
    return {"kernel": "f32" if names else "torch", "layers": len(names), "max_m": MAX_M,
            "small": small_why or "on", "onednn": onednn_why or "on"}
