"""Shared pieces of the Triton attention kernels: argument checks, scale operands, tile helpers.

Imports triton at module level: import this module only from code that has decided to use
Triton (triton_backend.py imports it lazily), never at app import time.

Cache layout (see metadata.py): k_cache, v_cache (num_blocks, block_size, num_kv_heads, head_dim).
Key position n of sequence s lives in block block_tables[s, n // block_size] at offset
n % block_size; the kernels gather K/V tiles through that indirection, so any block_size works.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl

from .torch_ref import is_fp8


@dataclass
class Launch:
    """One kernel launch, kept as data so tools/triton_compile_check.py can compile exactly what runs."""

    kernel: object  # a @triton.jit function
    grid: tuple[int, ...]
    args: tuple  # positional (runtime) arguments, in the kernel's order
    constexprs: dict = field(default_factory=dict)  # tl.constexpr arguments by name
    options: dict = field(default_factory=dict)  # num_warps, num_stages

    def run(self) -> None:
        self.kernel[self.grid](*self.args, **self.constexprs, **self.options)


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def interpreting() -> bool:
    """True when kernels run under TRITON_INTERPRET=1 (CPU tests), where small tiles are used."""
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_cache(k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
    if k_cache.dim() != 4:
        raise ValueError(
            f"k_cache must be (num_blocks, block_size, num_kv_heads, head_dim), got shape {tuple(k_cache.shape)}"
        )
    if k_cache.shape != v_cache.shape or k_cache.stride() != v_cache.stride() or k_cache.dtype != v_cache.dtype:
        raise ValueError("k_cache and v_cache must have the same shape, strides and dtype; allocate them alike")
    if k_cache.stride(-1) != 1:
        raise ValueError("the KV cache's head_dim must be contiguous (stride 1); allocate it with torch.empty")


def check_meta(meta) -> None:
    bt = meta.block_tables
    if bt.dim() != 2 or (bt.shape[1] > 1 and bt.stride(1) != 1):
        raise ValueError("meta.block_tables must be a (num_seqs, max_blocks) tensor with contiguous rows")


def check_rows(x: torch.Tensor, name: str) -> None:
    """Kernels index (tokens, heads, head_dim) with free token/head strides but a unit last stride."""
    if x.dim() != 3:
        raise ValueError(f"{name} must be (num_tokens, num_heads, head_dim), got shape {tuple(x.shape)}")
    if x.stride(-1) != 1:
        raise ValueError(f"{name} must have a contiguous last dimension; call .contiguous() first")


def scale_operand(scale, fallback: torch.Tensor) -> tuple[torch.Tensor, float, bool]:
    """(pointer, value, from_pointer) for a per-layer scale given as None, a float or a tensor.

    A device tensor is read inside the kernel (no host sync, so CUDA-graph safe); a float or a
    CPU tensor is passed by value. `fallback` is any tensor on the kernel's device, passed as the
    unused pointer.
    """
    if scale is None:
        return fallback, 1.0, False
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise ValueError(f"a KV scale must be one number per layer, got shape {tuple(scale.shape)}")
        if scale.device == fallback.device and scale.device.type != "cpu":
            return scale.reshape(1), 1.0, True
        return fallback, float(scale), False
    return fallback, float(scale), False


def scale_operands(k_scale, v_scale, like: torch.Tensor) -> tuple[tuple, dict]:
    """Kernel arguments for both scales: (k_ptr, v_ptr, k_value, v_value) and their constexprs."""
    k_ptr, k_val, k_from_ptr = scale_operand(k_scale, like)
    v_ptr, v_val, v_from_ptr = scale_operand(v_scale, like)
    return (k_ptr, v_ptr, k_val, v_val), dict(K_SCALE_PTR=k_from_ptr, V_SCALE_PTR=v_from_ptr)


def fp8_max(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max) if is_fp8(dtype) else 0.0


def dot_precision(dtype: torch.dtype):
    # fp32 inputs: exact fp32 products (the GPU default would be tf32); others ignore the setting.
    return "ieee" if dtype == torch.float32 else None


@triton.jit
def load_scale(ptr, value, FROM_PTR: tl.constexpr):
    if FROM_PTR:
        return tl.load(ptr).to(tl.float32)
    else:
        return value


@triton.jit
def attend_tile(
    q, acc, m_i, l_i,  # q (M, D) in the compute dtype; acc (M, D) fp32; m_i, l_i (M,) fp32
    k_cache_ptr, v_cache_ptr, bt_row_ptr,  # bt_row_ptr: this sequence's block-table row
    start, kv_head, q_pos, hi, qk_scale,  # q_pos (M,): context position of each query row
    stride_cb, stride_cs, stride_ch, block_size,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    MASKED: tl.constexpr, PRECISION: tl.constexpr,
):
    """One online-softmax step over keys start .. start + BLOCK_N (log2 domain).

    MASKED=False is the fast path for tiles every query row may fully see (all keys < hi and
    <= q_pos); MASKED=True applies `key < hi` and lower-right causal `key <= q_pos`.
    """
    n = start + tl.arange(0, BLOCK_N)  # (N,) key positions
    d = tl.arange(0, BLOCK_D)
    if MASKED:
        blk = tl.load(bt_row_ptr + n // block_size, mask=n < hi, other=0)
    else:
        blk = tl.load(bt_row_ptr + n // block_size)
    kv_off = blk.to(tl.int64) * stride_cb + (n % block_size) * stride_cs + kv_head * stride_ch  # (N,)
    # K is loaded transposed, (D, N), so q @ k needs no in-register transpose.
    k_ptrs = k_cache_ptr + kv_off[None, :] + d[:, None]
    v_ptrs = v_cache_ptr + kv_off[:, None] + d[None, :]
    if MASKED or BLOCK_D != HEAD_DIM:
        n_ok = n < hi
        d_ok = d < HEAD_DIM
        k = tl.load(k_ptrs, mask=d_ok[:, None] & n_ok[None, :], other=0.0)
        v = tl.load(v_ptrs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
    else:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    qk = tl.dot(q, k.to(q.dtype), input_precision=PRECISION) * qk_scale  # (M, N) fp32, log2 units
    if MASKED:
        visible = (n[None, :] < hi) & (n[None, :] <= q_pos[:, None])
        qk = tl.where(visible, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))  # m_i starts at -1e30, so never -inf
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(qk - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v.to(q.dtype), input_precision=PRECISION)
    return acc, m_new, l_i


def check_attention(q, k_cache, v_cache, meta, out) -> tuple[int, int, int, int]:
    """Validates an attention call; returns (rows, num_heads, head_dim, num_kv_heads)."""
    check_cache(k_cache, v_cache)
    check_meta(meta)
    check_rows(q, "q")
    check_rows(out, "out")
    rows, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    if k_cache.shape[3] != head_dim or num_heads % num_kv_heads or out.shape != q.shape:
        raise ValueError(
            f"q (num_heads={num_heads}, head_dim={head_dim}) does not fit the cache (num_kv_heads="
            f"{num_kv_heads}, head_dim={k_cache.shape[3]}) or out {tuple(out.shape)}: num_heads must be "
            "a multiple of num_kv_heads and out must have q's shape"
        )
    return rows, num_heads, head_dim, num_kv_heads
