"""Triton varlen prefill attention over new tokens plus cached prefix blocks (paged, GQA, causal).

Sequence s owns query rows query_start_loc[s] : query_start_loc[s+1]; they are the last q_len
positions of its seq_lens[s]-token context, so query row r sees keys 0 .. seq_len - q_len + r
(lower-right causal, metadata.py). K/V are read from the paged cache through block_tables, so
store_kv must have written this step's tokens first.

Grid: (cdiv(max_query_len, BLOCK_Q), num_seqs, num_kv_heads). One program takes BLOCK_Q query
tokens of one sequence times every query head of one KV group: its tile has
BLOCK_M = BLOCK_Q * GROUP_P rows (row = token * GROUP_P + head-in-group), so each K/V tile is
read once per group. Keys strictly before the tile's first query are processed without masks;
only the last few key tiles (the causal diagonal and the end of the context) are masked.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .metadata import AttentionMetadata
from .triton_common import (
    Launch, attend_tile, check_attention, dot_precision, interpreting, load_scale, next_pow2,
    scale_operands,
)


@dataclass(frozen=True)
class PrefillConfig:
    block_m: int = 128  # rows per program (query tokens x padded group size)
    block_n: int = 64  # keys per inner step
    num_warps: int = 8
    num_stages: int = 2


def default_prefill_config(head_dim: int, dtype: torch.dtype) -> PrefillConfig:
    if interpreting():
        # Small tiles make tiny CPU tests cross several query and key tiles.
        return PrefillConfig(block_m=16, block_n=16, num_warps=1, num_stages=1)
    return gpu_prefill_config(head_dim, dtype)


def gpu_prefill_config(head_dim: int, dtype: torch.dtype) -> PrefillConfig:
    """The compiled kernel's tiles (tests also run them under the interpreter, for correctness).

    Register budgets checked with tools/triton_compile_check.py under triton 3.6 (the GPU machine's) and 3.9:
    fp32 operands take twice the registers of bf16, and 128x64 fp32 tiles spill under 3.6's
    compiler (head_dim 16: 255 registers + 24 B stack; head_dim 128: 41 KB stack)."""
    if dtype == torch.float32:
        if head_dim <= 32:
            return PrefillConfig(block_m=64, block_n=64, num_warps=8, num_stages=2)
        return PrefillConfig(block_m=16, block_n=64, num_warps=8, num_stages=2)
    if head_dim <= 64:
        return PrefillConfig(block_m=128, block_n=64, num_warps=4, num_stages=3)
    return PrefillConfig(block_m=128, block_n=64, num_warps=8, num_stages=2)


@triton.jit
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr,
    query_start_loc_ptr, seq_lens_ptr, block_tables_ptr,
    k_scale_ptr, v_scale_ptr, k_scale_val, v_scale_val, sm_scale,
    stride_qt, stride_qh, stride_ot, stride_oh,  # q/out (num_tokens, num_heads, head_dim)
    stride_cb, stride_cs, stride_ch,  # caches (num_blocks, block_size, num_kv_heads, head_dim)
    stride_bt, block_size,
    GROUP: tl.constexpr, GROUP_P: tl.constexpr, BLOCK_Q: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    K_SCALE_PTR: tl.constexpr, V_SCALE_PTR: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):
    BLOCK_M: tl.constexpr = BLOCK_Q * GROUP_P
    q_block = tl.program_id(0)
    seq = tl.program_id(1)
    kv_head = tl.program_id(2)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    seq_len = tl.load(seq_lens_ptr + seq)
    ctx_off = seq_len - q_len  # context position of this sequence's first query token

    rows = tl.arange(0, BLOCK_M)
    tok = q_block * BLOCK_Q + rows // GROUP_P  # (M,) token index within the sequence
    g = rows % GROUP_P
    head = kv_head * GROUP + g
    row_ok = (tok < q_len) & (g < GROUP)
    q_pos = ctx_off + tok  # (M,) context position of each row's query
    d = tl.arange(0, BLOCK_D)
    io_mask = row_ok[:, None] & (d[None, :] < HEAD_DIM)
    q = tl.load(q_ptr + (q_start + tok)[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :],
                mask=io_mask, other=0.0)  # (M, D)
    if DOT_F32:  # the interpreter's tl.dot cannot multiply bf16 (it multiplies raw bits)
        q = q.to(tl.float32)

    k_scale = load_scale(k_scale_ptr, k_scale_val, K_SCALE_PTR)
    v_scale = load_scale(v_scale_ptr, v_scale_val, V_SCALE_PTR)
    qk_scale = sm_scale * k_scale * 1.4426950408889634  # fold the K dequant scale and log2(e)
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    first_tok = q_block * BLOCK_Q
    last_tok = tl.minimum(first_tok + BLOCK_Q, q_len) - 1
    # Keys visible to the tile's last query; 0 when the tile lies past this sequence's queries.
    hi = tl.where(first_tok < q_len, ctx_off + last_tok + 1, 0)
    # Keys < ctx_off + first_tok + 1 are seen by every query row: no masking needed there.
    full_hi = tl.where(first_tok < q_len, ((ctx_off + first_tok + 1) // BLOCK_N) * BLOCK_N, 0)
    bt_row = block_tables_ptr + seq.to(tl.int64) * stride_bt
    for start in range(0, full_hi, BLOCK_N):
        acc, m_i, l_i = attend_tile(q, acc, m_i, l_i, k_cache_ptr, v_cache_ptr, bt_row, start, kv_head, q_pos, hi,
                                    qk_scale, stride_cb, stride_cs, stride_ch, block_size,
                                    HEAD_DIM, BLOCK_N, BLOCK_D, False, PRECISION)
    for start in range(full_hi, hi, BLOCK_N):
        acc, m_i, l_i = attend_tile(q, acc, m_i, l_i, k_cache_ptr, v_cache_ptr, bt_row, start, kv_head, q_pos, hi,
                                    qk_scale, stride_cb, stride_cs, stride_ch, block_size,
                                    HEAD_DIM, BLOCK_N, BLOCK_D, True, PRECISION)

    l_i = tl.where(l_i == 0.0, 1.0, l_i)  # padding rows only: every real query sees key 0
    out = acc * (v_scale / l_i)[:, None]
    tl.store(out_ptr + (q_start + tok)[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=io_mask)


def prefill_attention(
    q: torch.Tensor,  # (num_tokens, num_heads, head_dim)
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
    out: torch.Tensor | None = None,  # (num_tokens, num_heads, head_dim); allocated when None
    config: PrefillConfig | None = None,
) -> torch.Tensor:
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device) if out is None else out
    for launch in plan_prefill(q, k_cache, v_cache, meta, scale, k_scale, v_scale, out, config):
        launch.run()
    return out


def plan_prefill(q, k_cache, v_cache, meta: AttentionMetadata, scale, k_scale, v_scale, out,
                 config: PrefillConfig | None = None) -> list[Launch]:
    num_tokens, num_heads, head_dim, num_kv_heads = check_attention(q, k_cache, v_cache, meta, out)
    if meta.num_seqs == 0 or meta.max_query_len == 0:
        return []
    group = num_heads // num_kv_heads
    group_p = next_pow2(group)
    cfg = config or default_prefill_config(head_dim, q.dtype)
    block_q = max(1, cfg.block_m // group_p)
    scale_args, scale_constexprs = scale_operands(k_scale, v_scale, q)
    grid = (triton.cdiv(meta.max_query_len, block_q), meta.num_seqs, num_kv_heads)
    args = (
        q, k_cache, v_cache, out,
        meta.query_start_loc, meta.seq_lens, meta.block_tables,
        *scale_args, float(scale),
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        meta.block_tables.stride(0), k_cache.shape[1],
    )
    constexprs = dict(
        GROUP=group, GROUP_P=group_p, BLOCK_Q=block_q,
        HEAD_DIM=head_dim, BLOCK_N=cfg.block_n, BLOCK_D=next_pow2(head_dim),
        **scale_constexprs, PRECISION=dot_precision(q.dtype), DOT_F32=interpreting(),
    )
    options = dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return [Launch(_prefill_kernel, grid, args, constexprs, options)]
