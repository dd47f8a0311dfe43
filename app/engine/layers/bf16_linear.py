"""nn.Linear with bf16 weights on the CPU, its calls of a few rows through quant/vnni.py's bf16_mm.

At batch 1 a bf16 model's decode step is matrix-vector products; torch's bf16 matmul reaches
about 18 GB/s of weights per core here, vdpbf16ps over the rows about 26 (BENCHMARKS.md, issue 14).
Same products (bf16 x bf16, exact) and float32 sums in another order, one rounding to bf16 at the
end: on the test shapes the outputs equal F.linear's bit for bit; above max_m rows (prefill,
batches) F.linear as before. The weight Parameter is the original one (a tied head stays tied).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..quant import vnni

# Largest M for bf16_mm. 1 thread, Qwen2.5-Coder-1.5B's 28 x 4 projections, loaded 2-core Zen 5 VM,
# CPU seconds, 2026-11-29: M=1 101.7 ms vs 164.2 (F.linear), M=2 139.3 vs 166.1, M=4 160.0 vs 168.8.
# With the 4 x 4 tiles (2026-11-30, 2 threads, idle, best of 5), its 151936 x 1536 LM head: M=1 7.1
# ms vs 20.2, M=4 12.8 vs 16.5, M=8 16.7 vs 18.9, M=16 21.6 vs 22.6, M=64 65.5 vs 45.5; 8960 x 1536:
# M=8 0.40 vs 0.95, M=16 1.05 vs 1.03.
MAX_M = 8


class Bf16Linear(nn.Linear):
    """Built by `use_bf16_kernel_` from an nn.Linear (shares its Parameters)."""

    max_m = MAX_M

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] > self.max_m or x.dtype != torch.bfloat16:
            return F.linear(x, self.weight, self.bias)
        if self.bias is None:
            y = vnni.bf16_mm(x2, self.weight)
        else:  # the bias joins the float32 sums before the one rounding, as in F.linear (addmm)
            y = (vnni.bf16_mm(x2, self.weight, torch.float32) + self.bias).to(torch.bfloat16)
        return y.reshape(*x.shape[:-1], self.out_features)


def _swap(old: nn.Linear) -> Bf16Linear:
    new = Bf16Linear.__new__(Bf16Linear)
    nn.Module.__init__(new)
    new.in_features, new.out_features = old.in_features, old.out_features
    new.weight = old.weight  # the same Parameter: ties and memory unchanged
    new.bias = old.bias
    return new


def use_bf16_kernel_(model: nn.Module, mode: str = "auto") -> dict:
    """Swaps every CPU nn.Linear with a contiguous bf16 weight (in_features % 32 == 0) for a
    Bf16Linear; returns {"kernel", "layers", "reason"}. mode as EngineConfig.cpu_kernels."""
    if mode not in vnni.MODES:
        raise ValueError(f"cpu_kernels must be one of {vnni.MODES}, got {mode!r}")
    why = "cpu_kernels='torch'" if mode == "torch" else vnni.problem()
    if why is not None:
        if mode == "vnni":
            raise ValueError(f"cpu_kernels='vnni' but the VNNI kernels cannot run here: {why}; use 'auto' or 'torch'")
        return {"kernel": "torch", "layers": 0, "reason": why}
    names = [n for n, m in model.named_modules()
             if type(m) is nn.Linear and m.weight.device.type == "cpu" and m.weight.dtype == torch.bfloat16
             and m.weight.is_contiguous() and m.in_features % 32 == 0]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, _swap(getattr(owner, child)))
    return {"kernel": "vnni" if names else "torch", "layers": len(names), "max_m": MAX_M, "reason": None}
