"""Int4Linear: an nn.Linear replacement holding group-wise int4 weights in torch's tinygemm layout.

forward(x) with M = number of rows of x:
- M < dense_min_m (or dense_min_m None): the packed int4 kernel (activations cast to the kernel
  dtype: bf16 on CUDA, cfg.cpu_compute_dtype on CPU; output cast back to x's dtype, unless
  keep_kernel_dtype is set: chain.py).
- M <= vnni_max_m (0 = never; any M where the CPU has them: vnni.use_vnni_): quant/vnni.py's
  kernel on the same packed weights, activations rounded to int8 per block of 32, float32 output.
- M >= dense_min_m: dequantize the weight to the same kernel dtype and run F.linear (the packed
  kernels slow down at large M; a dense matmul does not), on the CPU a block of rows at a time
  (dense_blocks.py).
reference_forward(x): dequantize in float32 + F.linear — the obviously correct path tests compare to.

Build it on the device it will run on: the packed layout is device-specific, so moving the
module between CPU and CUDA afterwards is refused at the first forward.

Dequantizing needs the levels back: on CPU they are read out of the kernel layout (`unpack_cpu`,
verified at run time); where that is not possible (CUDA, or an unknown CPU layout) and the dense
path is enabled, the portable nibbles are kept too (+0.5 byte per weight, counted by weight_bytes).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import int4_kernels as K
from . import vnni
from .chain import finish_output
from .dense_blocks import block_rows, blocked_linear
from .int4 import Int4Weights, dequantize_int4, pack_nibbles, quantize_int4, unpack_nibbles


class Int4Linear(nn.Module):
    def __init__(
        self,
        weights: Int4Weights,
        bias: torch.Tensor | None = None,
        *,
        device: torch.device | str | None = None,
        dense_min_m: int | None = None,
        cpu_compute_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__()
        device = torch.device(device if device is not None else weights.qweight.device)
        problem = K.shape_problem(weights.out_features, weights.in_features, weights.group_size, device)
        if problem:
            raise ValueError(f"cannot build an int4 layer: {problem}")
        kdtype = K.kernel_dtype(device, cpu_compute_dtype)
        packed = K.pack_for_device(weights.qweight, device)
        # (K/g, N, 2): [..., 0] scale, [..., 1] zero
        sz = K.scales_and_zeros(weights.scales.float(), weights.zeros.float(), kdtype).to(device)
        self._setup(packed, sz, weights.group_size, weights.out_features, weights.in_features, bias, device,
                    dense_min_m, kdtype, portable=weights.qweight)

    def _setup(self, packed, sz, group_size, n, k, bias, device, dense_min_m, kdtype, portable=None) -> None:
        self.in_features, self.out_features, self.group_size = k, n, group_size
        self.dense_min_m = dense_min_m
        self.kdtype = kdtype
        self.keep_kernel_dtype = False  # see keep_kernel_dtype_ (quant/chain.py)
        self.vnni_max_m = 0  # calls with at most this many rows use quant/vnni.py (set by use_vnni_)
        self.kdevice = device.type  # the packed layout below is only valid on this device type
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", sz)
        unpackable = device.type == "cpu" and K.cpu_layout_known()
        if device.type == "cpu" and not unpackable:
            warnings.warn("unknown CPU int4 layout in this torch: keeping a second (portable) weight copy")
        keep_portable = not unpackable and dense_min_m is not None
        if keep_portable and portable is None:
            raise ValueError("this int4 layer needs its portable nibbles (dense path on a layout we cannot unpack)")
        self.register_buffer("qweight", portable.to(device).contiguous() if keep_portable else None)
        self.bias = nn.Parameter(bias.detach().to(device), requires_grad=False) if bias is not None else None

    @classmethod
    def from_packed(cls, packed: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int, out_features: int,
                    in_features: int, bias: torch.Tensor | None = None, *, device, dense_min_m: int | None = None,
                    cpu_compute_dtype: torch.dtype = torch.bfloat16,
                    portable: torch.Tensor | None = None) -> "Int4Linear":
        """From tensors already in this device's kernel layout (the quantized-weights cache maps them
        from disk on CPU; no re-packing, no copy). `packed`/`scales_and_zeros` as the buffers of a
        layer built on the same device type, torch version and kernel dtype."""
        device = torch.device(device)
        kdtype = K.kernel_dtype(device, cpu_compute_dtype)
        if scales_and_zeros.dtype != kdtype or scales_and_zeros.shape != (in_features // group_size, out_features, 2):
            raise ValueError(f"cached int4 scales {tuple(scales_and_zeros.shape)} {scales_and_zeros.dtype} do not fit "
                             f"a {out_features}x{in_features} layer with group {group_size} in {kdtype}")
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._setup(packed.to(device), scales_and_zeros.to(device), group_size, out_features, in_features, bias,
                    device, dense_min_m, kdtype, portable=portable)
        return self

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 128, *, hqq: bool = False, hqq_iters: int = 20,
                    **kw) -> "Int4Linear":
        # quantized on the weight's device (fast on GPU); scales/zeros rounded to bf16
        w = quantize_int4(linear.weight, group_size, hqq=hqq, hqq_iters=hqq_iters)
        return cls(w, linear.bias, device=linear.weight.device, **kw)

    def levels(self) -> torch.Tensor:
        """(N, K) uint8 levels 0..15 (raises where they cannot be read back without the kernel)."""
        if self.qweight is not None:
            return unpack_nibbles(self.qweight)
        if self.packed.device.type == "cpu" and K.cpu_layout_known():
            return K.unpack_cpu(self.packed, self.out_features, self.in_features)
        raise RuntimeError("int4 levels are not kept on this device (dense_min_m=None); use dequantize_weight()")

    def to_int4_weights(self) -> Int4Weights:
        sz = self.scales_and_zeros.float()
        return Int4Weights(pack_nibbles(self.levels()), sz[..., 0].t().contiguous(), sz[..., 1].t().contiguous(),
                           self.group_size)

    def dequantize_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, K) dense weight: q * scale + (zero - 8 * scale), one fused multiply-add per weight."""
        sz = self.scales_and_zeros
        try:
            q = self.levels()  # (N, K) uint8
        except RuntimeError:
            return K.dequantize_via_kernel(self.packed, sz, self.group_size, self.out_features,
                                           self.in_features, dtype, sz.device)
        return self._affine(q, 0, self.out_features, dtype)

    def _affine(self, q: torch.Tensor, r0: int, r1: int, dtype: torch.dtype) -> torch.Tensor:
        """Levels q (r1 - r0, K) uint8 of rows r0:r1 -> their weights in `dtype`."""
        rows, k, g = r1 - r0, self.in_features, self.group_size
        p = self.scales_and_zeros[:, r0:r1].to(torch.float32).permute(1, 0, 2)  # (rows, G, 2), small
        scale = p[..., :1]
        base = p[..., 1:] - 8.0 * scale  # (rows, G, 1): the value of level 0
        # in place: fresh multi-MB allocations (page faults) cost more than the arithmetic on CPU
        w = q.to(dtype).reshape(rows, k // g, g)
        w.mul_(scale.to(dtype)).add_(base.to(dtype))
        return w.reshape(rows, k)

    def _dense_forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, K) in the kernel dtype -> (M, N): dequantize + matmul a block of rows at a time
        (dense_blocks.py) where the CPU layout can be read by rows, else the whole weight at once."""
        n, k = self.out_features, self.in_features
        if self.packed.device.type != "cpu" or self.qweight is not None or not K.cpu_layout_known() or n % 64:
            return F.linear(x, self.dequantize_weight(x.dtype))
        return blocked_linear(x, n, block_rows(k),
                              lambda r0, r1: self._affine(K.unpack_cpu_rows(self.packed, k, r0, r1), r0, r1, x.dtype))

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Independent of the kernels and of dequantize_weight: the levels through dequantize_int4."""
        sz = self.scales_and_zeros.float()
        try:
            w = dequantize_int4(self.levels(), sz[..., 0].t(), sz[..., 1].t(), self.group_size)
        except RuntimeError:  # CUDA without the portable copy: only the kernel can read the layout
            w = self.dequantize_weight(torch.float32)
        b = self.bias.float() if self.bias is not None else None
        return F.linear(x.float(), w, b).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != self.packed.device.type or self.packed.device.type != self.kdevice:
            raise ValueError(f"Int4Linear was packed for {self.kdevice}; got input on {x.device} / weights on "
                             f"{self.packed.device}: quantize the model on the device it runs on")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if x2.shape[0] <= self.vnni_max_m:  # int8 activations, integer dot products (quant/vnni.py)
            y = vnni.q4_mm(x2, self.packed, self.scales_and_zeros, self.group_size, self.out_features)
        elif self.dense_min_m is not None and x2.shape[0] >= self.dense_min_m:
            # dense in the kernel dtype too: on CPUs with AMX a bf16 matmul is several times an fp32 one
            y = self._dense_forward(x2.to(self.kdtype))
        else:
            y = K.int4_mm(x2.to(self.kdtype).contiguous(), self.packed, self.group_size, self.scales_and_zeros)
        return finish_output(y, self.bias, x.dtype, self.keep_kernel_dtype).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
                f"bias={self.bias is not None}, dense_min_m={self.dense_min_m}, kernel_dtype={self.kdtype}")
