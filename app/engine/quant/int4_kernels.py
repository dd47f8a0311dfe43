"""torch's int4 tinygemm kernels: packing for the device, calling, and unpacking where we can.

torch 2.11 and 2.13 (both checked against the ATen sources / on CPU):
- CUDA: `_convert_weight_to_int4pack(uint8 (N, K/2) nibbles, even k high, innerKTiles in {2,4,8})`
  -> int32 (N/8, K/(innerKTiles*16), 32, innerKTiles/2); `_weight_int4pack_mm(x bf16 (M, K)
  contiguous, packed, group, scales_and_zeros bf16 (K/g, N, 2))` -> bf16 (M, N). Needs sm80+,
  K % (innerKTiles * 16) == 0, N % 8 == 0.
- CPU: `_convert_weight_to_int4pack_for_cpu(int32 (N, K) values 0..15, innerKTiles ignored)`
  -> uint8 (N, K/2) in a blocked layout; `_weight_int4pack_mm_for_cpu(x (M, K) fp32|bf16|fp16,
  packed, group, scales_and_zeros (K/g, N, 2) in x's dtype)` -> (M, N) in x's dtype. N % 16 == 0.
- Both dequantize as (q - 8) * scale + zero; group sizes 32, 64, 128, 256.
"""
from __future__ import annotations

import functools

import torch

from .int4 import unpack_nibbles


def kernel_dtype(device: torch.device, cpu_dtype: torch.dtype) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else cpu_dtype


def inner_k_tiles(k: int) -> int:
    for t in (8, 4, 2):
        if k % (t * 16) == 0:
            return t
    raise ValueError(f"in_features {k} must be a multiple of 32 for the int4 kernel")


def shape_problem(n: int, k: int, group_size: int, device: torch.device) -> str | None:
    """Why (N, K) cannot go through the int4 kernel on `device` (None when it can)."""
    if k % group_size or k % 32:
        return f"in_features {k} is not a multiple of the group size {group_size} (and of 32)"
    n_mult = 8 if device.type == "cuda" else 16
    if n % n_mult:
        return f"out_features {n} is not a multiple of {n_mult} (int4 kernel on {device.type})"
    return None


def scales_and_zeros(scales: torch.Tensor, zeros: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, G) scales and zeros -> (G, N, 2) as the kernels take them."""
    return torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous().to(dtype)


# CPU packing takes int32 levels (8x the packed size): pack this many rows at a time so the
# transient stays small (a multiple of 64, the CPU layout's row block, so the parts concatenate).
PACK_ROWS = 256


def pack_for_device(qweight: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Portable nibbles (N, K/2) uint8 -> the kernel layout for `device`."""
    qweight = qweight.to(device).contiguous()
    k = qweight.shape[1] * 2
    if device.type == "cuda":
        return torch.ops.aten._convert_weight_to_int4pack(qweight, inner_k_tiles(k))
    n = qweight.shape[0]
    step = n if n <= PACK_ROWS or not cpu_layout_known() else PACK_ROWS  # row blocks only in a known layout
    parts = [torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_nibbles(qweight[r:r + step]).to(torch.int32),
                                                                 inner_k_tiles(k)) for r in range(0, n, step)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)  # (N, K/2) uint8, row blocks in order


def int4_mm(x: torch.Tensor, packed: torch.Tensor, group_size: int, sz: torch.Tensor) -> torch.Tensor:
    """x (M, K) already in the kernel dtype and contiguous -> (M, N)."""
    if x.device.type == "cuda":
        return torch.ops.aten._weight_int4pack_mm(x, packed, group_size, sz)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, sz)


def unpack_cpu(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """CPU blocked layout -> (N, K) uint8 levels, or raise if the layout is not the one we know.

    Observed layout (torch 2.13, verified at run time by `cpu_layout_known`): out_features in
    blocks of 64 rows, each stored k-major as (K, 32) bytes with byte j = q[j] | q[j + 32] << 4;
    a last block of the remaining r < 64 rows is stored (K, r/2) with byte j = q[2j] | q[2j+1] << 4.
    """
    n64 = n - n % 64
    out = unpack_cpu_rows(packed, k, 0, n64)
    return out if n64 == n else torch.cat([out, unpack_cpu_tail(packed, n, k)], dim=0)


def unpack_cpu_tail(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """The last n % 64 rows of the CPU layout -> (n % 64, K) uint8."""
    n64, r = n - n % 64, n % 64
    t = packed.reshape(-1)[n64 * k // 2:].reshape(k, r // 2)  # (K, r/2): rows 2j and 2j + 1
    return torch.stack([t & 0xF, t >> 4], dim=-1).reshape(k, r).t()


def unpack_cpu_rows(packed: torch.Tensor, k: int, r0: int, r1: int) -> torch.Tensor:
    """Rows r0:r1 (multiples of 64, within the full 64-row blocks) of the CPU layout -> (r1 - r0, K) uint8."""
    v = packed.reshape(-1)[r0 * k // 2: r1 * k // 2].reshape((r1 - r0) // 64, k, 32)  # (blocks, K, 32) bytes
    full = torch.cat([v & 0xF, v >> 4], dim=-1)  # (blocks, K, 64): rows j and j + 32
    return full.permute(0, 2, 1).reshape(r1 - r0, k)


@functools.lru_cache(maxsize=None)
def cpu_layout_known() -> bool:
    """Probe: does `unpack_cpu` invert this torch's CPU packing? (tail blocks included)"""
    try:
        g = torch.Generator().manual_seed(0)
        for n, k in ((128 + 48, 64), (16, 32)):
            q = torch.randint(0, 16, (n, k), generator=g, dtype=torch.int32)
            p = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
            if not torch.equal(unpack_cpu(p, n, k).to(torch.int32), q):
                return False
        return True
    except Exception:
        return False


def dequantize_via_kernel(packed, sz, group_size, n, k, dtype, device) -> torch.Tensor:
    """Exact dequantization by multiplying the identity through the kernel (slow: an M=K call).

    Only for layouts we cannot unpack with tensor ops; returns (N, K).
    """
    eye = torch.eye(k, dtype=sz.dtype, device=device)
    return int4_mm(eye, packed, group_size, sz).t().to(dtype)  # (K, N) -> (N, K)
