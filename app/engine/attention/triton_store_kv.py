"""Triton kernel writing a step's new K/V into the paged cache by slot (torch_ref.store_kv semantics).

One program per token: it reads the token's slot, skips slot -1 (padding), and writes all KV heads
of K and V at block slot // block_size, offset slot % block_size. For an fp8 cache the values are
stored as clamp(x / scale, -max, max) in the cache dtype (torch saturates the same way).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .torch_ref import is_fp8
from .triton_common import Launch, check_cache, check_rows, fp8_max, load_scale, next_pow2, scale_operands


@triton.jit
def _store_kv_kernel(
    key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    k_scale_ptr, v_scale_ptr, k_scale_val, v_scale_val,
    stride_kt, stride_kh, stride_vt, stride_vh,  # key/value (num_tokens, num_kv_heads, head_dim)
    stride_cb, stride_cs, stride_ch,  # caches (num_blocks, block_size, num_kv_heads, head_dim)
    block_size,
    NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    IS_FP8: tl.constexpr, FP8_MAX: tl.constexpr, K_SCALE_PTR: tl.constexpr, V_SCALE_PTR: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    # slot -1 (padding) masks every load and store of this program: nothing is written.
    heads = tl.where(slot >= 0, NUM_KV_HEADS, 0)
    mask = (h < heads) & (d < HEAD_DIM)
    safe = tl.maximum(slot, 0)
    dst = (safe // block_size) * stride_cb + (safe % block_size) * stride_cs + h * stride_ch + d
    k = tl.load(key_ptr + t * stride_kt + h * stride_kh + d, mask=mask, other=0.0)
    v = tl.load(value_ptr + t * stride_vt + h * stride_vh + d, mask=mask, other=0.0)
    if IS_FP8:
        ks = load_scale(k_scale_ptr, k_scale_val, K_SCALE_PTR)
        vs = load_scale(v_scale_ptr, v_scale_val, V_SCALE_PTR)
        # Correctly rounded division (plain `/` is approximate on the GPU), as torch_ref divides.
        zero = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
        k = tl.minimum(tl.maximum(tl.div_rn(k.to(tl.float32), zero + ks), -FP8_MAX), FP8_MAX)
        v = tl.minimum(tl.maximum(tl.div_rn(v.to(tl.float32), zero + vs), -FP8_MAX), FP8_MAX)
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def store_kv(
    key: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    value: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,  # (num_tokens,) int, -1 = skip
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
) -> None:
    for launch in plan_store_kv(key, value, k_cache, v_cache, slot_mapping, k_scale, v_scale):
        launch.run()


def plan_store_kv(
    key: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    value: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,  # (num_tokens,) int, -1 = skip
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
) -> list[Launch]:
    check_cache(k_cache, v_cache)
    check_rows(key, "key")
    check_rows(value, "value")
    num_tokens, num_kv_heads, head_dim = key.shape
    if value.shape != key.shape or tuple(k_cache.shape[2:]) != (num_kv_heads, head_dim):
        raise ValueError(
            f"key {tuple(key.shape)} / value {tuple(value.shape)} do not match the cache's "
            f"(num_kv_heads, head_dim) = {tuple(k_cache.shape[2:])}"
        )
    if slot_mapping.shape != (num_tokens,):
        raise ValueError(f"slot_mapping must have shape ({num_tokens},), got {tuple(slot_mapping.shape)}")
    if num_tokens == 0:
        return []
    fp8 = is_fp8(k_cache.dtype)
    scale_args, scale_constexprs = scale_operands(k_scale, v_scale, key)
    args = (
        key, value, k_cache, v_cache, slot_mapping,
        *scale_args,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        k_cache.shape[1],
    )
    constexprs = dict(
        NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim,
        BLOCK_H=next_pow2(num_kv_heads), BLOCK_D=next_pow2(head_dim),
        IS_FP8=fp8, FP8_MAX=fp8_max(k_cache.dtype), **scale_constexprs,
    )
    options = dict(num_warps=1 if num_kv_heads * head_dim <= 256 else 4)
    return [Launch(_store_kv_kernel, (num_tokens,), args, constexprs, options)]
