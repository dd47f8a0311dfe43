"""Per-channel symmetric int8 weights: w[n, k] ~= q[n, k] * scale[n], q in -127..127.

CPU: torch's `_weight_int8pack_mm(x (M, K), q int8 (N, K), scale (N,))` (x and scale in the same
float dtype). CUDA: that op is very slow there (REFERENCE.md: 0.129 ms vs bf16 0.024 ms at M=1 on
4096x4096), so CUDA always dequantizes to x's dtype and runs F.linear: it saves memory, not time.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .chain import finish_output
from .dense_blocks import block_rows, blocked_linear
from . import vnni
from .int4 import _scale_candidates


def quantize_int8(weight: torch.Tensor, param_dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float -> (q (N, K) int8, scale (N,) float32 holding `param_dtype`-exact values).

    The kernel takes the scale in the activation dtype (bf16), so each row tries the `param_dtype`
    scales just below and just above max|w| / 127 and keeps the one with the lower squared error
    (rounding up always was 1.5% more weight error than float32 scales on docstring-13m; this is
    below it). With the upper one |w - q * scale| <= scale / 2; the lower one can clip the row's
    largest weight by at most 127 * (exact - lower), and wins only where that pays overall.
    """
    w = weight.detach().float()
    exact = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8)  # (N,)
    best = None
    for scale in _scale_candidates(exact, param_dtype):
        q = (w / scale[:, None]).round_().clamp_(-127, 127)  # in place: one float temporary
        err = (q * scale[:, None]).sub_(w).square_().sum(dim=1)  # (N,)
        if best is None:
            best = [q, scale, err]
            continue
        take = err < best[2]
        best = [torch.where(take[:, None], q, best[0]), torch.where(take, scale, best[1]), torch.minimum(err, best[2])]
    return best[0].to(torch.int8), best[1]


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """Contiguous and 64-byte aligned: the CPU int8 kernel crashes (SIGSEGV) on a weight that is not,
    e.g. a tensor read from a safetensors file at an 8-byte offset (seen on torch 2.13, AVX512/AMX)."""
    t = t.contiguous()
    return t if t.data_ptr() % 64 == 0 else t.clone()


class Int8Linear(nn.Module):
    def __init__(
        self,
        qweight: torch.Tensor,  # (N, K) int8
        scale: torch.Tensor,  # (N,) float
        bias: torch.Tensor | None = None,
        *,
        dense_min_m: int | None = None,
        cpu_compute_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__()
        if qweight.dtype != torch.int8 or qweight.dim() != 2 or scale.shape != (qweight.shape[0],):
            raise ValueError("Int8Linear needs qweight (N, K) int8 and scale (N,)")
        self.out_features, self.in_features = qweight.shape
        dev = qweight.device
        self.use_kernel = dev.type == "cpu"
        self.dense_min_m = dense_min_m
        self.kdtype = cpu_compute_dtype if self.use_kernel else torch.float32
        self.keep_kernel_dtype = False  # see keep_kernel_dtype_ (quant/chain.py); CPU kernel path only
        self.vnni_max_m = 0  # calls with at most this many rows use quant/vnni.py (set by use_vnni_)
        self.register_buffer("qweight", _aligned(qweight))
        self.register_buffer("scale", _aligned(scale.to(dev, self.kdtype if self.use_kernel else torch.float32)))
        self.bias = nn.Parameter(bias.detach().to(dev), requires_grad=False) if bias is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kw) -> "Int8Linear":
        q, s = quantize_int8(linear.weight)
        return cls(q, s, linear.bias, **kw)

    def dequantize_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, K) dense weight."""
        return self.qweight.to(dtype).mul_(self.scale.to(dtype)[:, None])  # in place: one allocation

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias.float() if self.bias is not None else None
        return F.linear(x.float(), self.dequantize_weight(torch.float32), b).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if not self.use_kernel:  # CUDA: dequantize + matmul in the model's dtype
            return F.linear(x, self.dequantize_weight(x.dtype), self.bias)
        if x2.shape[0] <= self.vnni_max_m:  # int8 activations, integer dot products (quant/vnni.py)
            y = vnni.q8_mm(x2, self.qweight, self.scale)
        elif self.dense_min_m is not None and x2.shape[0] >= self.dense_min_m:
            # bf16 uses AMX where present; a block of rows dequantized at a time (dense_blocks.py)
            y = blocked_linear(x2.to(self.kdtype), self.out_features, block_rows(self.in_features),
                               lambda r0, r1: self.qweight[r0:r1].to(self.kdtype).mul_(self.scale[r0:r1, None]))
        else:
            y = torch.ops.aten._weight_int8pack_mm(x2.to(self.kdtype).contiguous(), self.qweight, self.scale)
        return finish_output(y, self.bias, x.dtype, self.keep_kernel_dtype).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        path = "int8pack_mm" if self.use_kernel else "dequant+F.linear"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"path={path}, dense_min_m={self.dense_min_m}")
