"""Row-wise FP8 W8A8: e4m3 weights with one scale per output row, activations quantized per token
at run time, multiplied by `torch._scaled_mm` (CUDA, compute capability >= 8.9).

    w[n, k] ~= wq[n, k] * w_scale[n]        x[m, k] ~= xq[m, k] * x_scale[m]
    y = _scaled_mm(xq (M, K), wq.t() (K, N) column-major, x_scale (M, 1), w_scale (1, N)) + bias
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

FP8 = getattr(torch, "float8_e4m3fn", None)
FP8_MAX = 448.0  # largest finite e4m3fn value; casting beyond it gives NaN, so clamp first


def quantize_rowwise_fp8(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, C) float -> (q (R, C) e4m3fn, scale (R, 1) float32) with |t / scale| <= 448."""
    tf = t.float()
    scale = (tf.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
    q = (tf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def fp8_problem(device: torch.device | str) -> str | None:
    """Why row-wise fp8 matmuls cannot run on `device` (None when they can)."""
    device = torch.device(device)
    if FP8 is None:
        return f"this torch ({torch.__version__}) has no float8_e4m3fn dtype"
    if device.type != "cuda":
        return (f"fp8 weights need a CUDA GPU with compute capability >= 8.9 (found {device.type}); "
                "use quantization='8bit' or '4bit'")
    if not torch.cuda.is_available():
        return "fp8 weights need CUDA, and torch.cuda.is_available() is False"
    idx = device.index if device.index is not None else torch.cuda.current_device()
    cc = torch.cuda.get_device_capability(idx)
    if cc < (8, 9):
        name = torch.cuda.get_device_name(idx)
        return f"fp8 weights need compute capability >= 8.9, {name} has {cc[0]}.{cc[1]}; use '8bit' or '4bit'"
    return _probe_scaled_mm(idx)


@functools.lru_cache(maxsize=None)
def _probe_scaled_mm(idx: int) -> str | None:
    try:
        dev = torch.device("cuda", idx)
        x, sx = quantize_rowwise_fp8(torch.randn(16, 32, device=dev))
        w, sw = quantize_rowwise_fp8(torch.randn(16, 32, device=dev))
        torch._scaled_mm(x, w.t(), scale_a=sx, scale_b=sw.t(), out_dtype=torch.bfloat16)
        return None
    except Exception as e:  # report the real reason rather than silently doing something else
        return f"torch._scaled_mm with row-wise scales failed on this GPU/torch: {e}"


def fp8_shape_problem(n: int, k: int) -> str | None:
    if n % 16 or k % 16:
        return f"fp8 _scaled_mm needs in/out features multiples of 16, got ({n}, {k})"
    return None


class Fp8Linear(nn.Module):
    def __init__(self, qweight: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if qweight.dtype != FP8 or w_scale.shape != (qweight.shape[0], 1):
            raise ValueError("Fp8Linear needs qweight (N, K) float8_e4m3fn and w_scale (N, 1)")
        problem = fp8_shape_problem(*qweight.shape)
        if problem:
            raise ValueError(problem)
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("qweight", qweight.contiguous())
        self.register_buffer("w_scale_row", w_scale.float().t().contiguous())  # (1, N) as _scaled_mm takes it
        self.bias = nn.Parameter(bias.detach().to(qweight.device), requires_grad=False) if bias is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Fp8Linear":
        q, s = quantize_rowwise_fp8(linear.weight.detach())
        return cls(q, s, linear.bias)

    def dequantize_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (self.qweight.float() * self.w_scale_row.t()).to(dtype)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same activation rounding as forward, then a float32 F.linear on dequantized operands."""
        x2 = x.reshape(-1, self.in_features)
        xq, sx = quantize_rowwise_fp8(x2)
        b = self.bias.float() if self.bias is not None else None
        y = F.linear(xq.float() * sx, self.dequantize_weight(torch.float32), b)
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xq, sx = quantize_rowwise_fp8(x.reshape(-1, self.in_features))  # (M, K), (M, 1)
        y = torch._scaled_mm(xq, self.qweight.t(), scale_a=sx, scale_b=self.w_scale_row, out_dtype=torch.bfloat16)
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
