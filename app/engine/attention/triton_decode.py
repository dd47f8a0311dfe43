"""Triton split-KV decode attention (one query token per sequence) over the paged cache.

Stage 1, grid (num_seqs, num_kv_heads, num_splits): each program takes every query head of one
KV group (padded to BLOCK_G >= 16 rows for tl.dot), so each K/V tile is read once per group,
and attends over one slice of the context. The slice length is computed in the kernel from
seq_lens (cdiv(seq_len, num_splits) rounded up to BLOCK_N), so short sequences simply leave
their last splits empty. It writes a normalized partial output and its log-sum-exp (log2).
Stage 2, grid (num_seqs, num_heads): combines the splits with softmax weights of their lse.

The launch grids depend only on shapes and on num_splits, which decode_num_splits derives from
shapes alone (block-table width, not seq_lens), so a decode step can be captured in a CUDA graph.
A sequence with seq_len 0 (a padding row of a graph bucket) gets an all-zero output.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .metadata import AttentionMetadata
from .triton_common import (
    Launch, attend_tile, check_attention, dot_precision, interpreting, load_scale, next_pow2,
    scale_operands,
)

MAX_SPLITS = 32
MIN_KEYS_PER_SPLIT = 256


@dataclass(frozen=True)
class DecodeConfig:
    num_splits: int | None = None  # None: decode_num_splits (from shapes only)
    block_n: int = 64  # keys per inner step
    num_warps: int = 4
    num_stages: int = 3
    reduce_warps: int = 4


def default_decode_config() -> DecodeConfig:
    if interpreting():
        return DecodeConfig(block_n=16, num_warps=1, num_stages=1, reduce_warps=1)
    return DecodeConfig()


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def decode_num_splits(num_seqs: int, num_kv_heads: int, max_context: int, device: torch.device) -> int:
    """Splits so that stage 1 has about two programs per SM, from shapes only (graph-safe).

    max_context is the capacity of the block table (max_blocks_per_seq * block_size).
    """
    if device.type == "cuda":
        sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    else:
        sms = 2  # interpreter: keep the grid small, but still split long contexts
    want = triton.cdiv(2 * sms, max(1, num_seqs * num_kv_heads))
    return max(1, min(want, triton.cdiv(max_context, MIN_KEYS_PER_SPLIT), MAX_SPLITS))


@triton.jit
def _decode_split_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, part_out_ptr, part_lse_ptr,
    seq_lens_ptr, block_tables_ptr,
    k_scale_ptr, v_scale_ptr, k_scale_val, v_scale_val, sm_scale,
    stride_qt, stride_qh,  # q (num_seqs, num_heads, head_dim)
    stride_cb, stride_cs, stride_ch,  # caches (num_blocks, block_size, num_kv_heads, head_dim)
    stride_bt, block_size, num_heads,
    NUM_SPLITS: tl.constexpr, GROUP: tl.constexpr, BLOCK_G: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    K_SCALE_PTR: tl.constexpr, V_SCALE_PTR: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    g = tl.arange(0, BLOCK_G)
    head = kv_head * GROUP + g
    row_ok = g < GROUP
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q = tl.load(q_ptr + seq * stride_qt + head[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (G, D)
    if DOT_F32:  # the interpreter's tl.dot cannot multiply bf16 (it multiplies raw bits)
        q = q.to(tl.float32)

    k_scale = load_scale(k_scale_ptr, k_scale_val, K_SCALE_PTR)
    v_scale = load_scale(v_scale_ptr, v_scale_val, V_SCALE_PTR)
    qk_scale = sm_scale * k_scale * 1.4426950408889634
    m_i = tl.full([BLOCK_G], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    q_pos = tl.zeros([BLOCK_G], tl.int32) + seq_len - 1  # the query is the context's last token

    per_split = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), BLOCK_N) * BLOCK_N
    lo = split * per_split
    hi = tl.maximum(tl.minimum(lo + per_split, seq_len), lo)  # empty split: hi == lo
    # Whole tiles below hi need no mask; at most one partial tile (the context's end) does.
    full_hi = lo + ((hi - lo) // BLOCK_N) * BLOCK_N
    bt_row = block_tables_ptr + seq.to(tl.int64) * stride_bt
    for start in range(lo, full_hi, BLOCK_N):
        acc, m_i, l_i = attend_tile(q, acc, m_i, l_i, k_cache_ptr, v_cache_ptr, bt_row, start, kv_head, q_pos, hi,
                                    qk_scale, stride_cb, stride_cs, stride_ch, block_size,
                                    HEAD_DIM, BLOCK_N, BLOCK_D, False, PRECISION)
    for start in range(full_hi, hi, BLOCK_N):
        acc, m_i, l_i = attend_tile(q, acc, m_i, l_i, k_cache_ptr, v_cache_ptr, bt_row, start, kv_head, q_pos, hi,
                                    qk_scale, stride_cb, stride_cs, stride_ch, block_size,
                                    HEAD_DIM, BLOCK_N, BLOCK_D, True, PRECISION)

    empty = l_i == 0.0  # this split holds no keys of this sequence
    lse = tl.where(empty, float("-inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
    part = acc * (v_scale / tl.where(empty, 1.0, l_i))[:, None]
    row = (seq * num_heads + head) * NUM_SPLITS + split  # part_lse (num_seqs, num_heads, NUM_SPLITS)
    tl.store(part_lse_ptr + row, lse, mask=row_ok)
    tl.store(part_out_ptr + row[:, None] * HEAD_DIM + d[None, :], part, mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _decode_reduce_kernel(
    part_out_ptr, part_lse_ptr, out_ptr,
    stride_ot, stride_oh, num_heads,
    NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    base = (seq * num_heads + head) * NUM_SPLITS
    lse = tl.load(part_lse_ptr + base + s, mask=s < NUM_SPLITS, other=float("-inf"))  # (S,)
    m = tl.max(lse, 0)
    m = tl.where(m == float("-inf"), 0.0, m)  # seq_len 0: all weights 0, output 0
    w = tl.exp2(lse - m)
    denom = tl.sum(w, 0)
    denom = tl.where(denom == 0.0, 1.0, denom)
    mask = (s[:, None] < NUM_SPLITS) & (d[None, :] < HEAD_DIM)
    part = tl.load(part_out_ptr + (base + s)[:, None] * HEAD_DIM + d[None, :], mask=mask, other=0.0)  # (S, D)
    out = tl.sum(part * (w / denom)[:, None], 0)
    tl.store(out_ptr + seq * stride_ot + head * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d < HEAD_DIM)


def decode_attention(
    q: torch.Tensor,  # (num_seqs, num_heads, head_dim): one query token per sequence
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
    out: torch.Tensor | None = None,  # (num_seqs, num_heads, head_dim); allocated when None
    config: DecodeConfig | None = None,
) -> torch.Tensor:
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device) if out is None else out
    for launch in plan_decode(q, k_cache, v_cache, meta, scale, k_scale, v_scale, out, config):
        launch.run()
    return out


def plan_decode(q, k_cache, v_cache, meta: AttentionMetadata, scale, k_scale, v_scale, out,
                config: DecodeConfig | None = None) -> list[Launch]:
    num_seqs, num_heads, head_dim, num_kv_heads = check_attention(q, k_cache, v_cache, meta, out)
    if meta.seq_lens.shape[0] != num_seqs or meta.block_tables.shape[0] != num_seqs:
        raise ValueError(f"decode takes one query row per sequence: q has {num_seqs} rows, "
                         f"metadata has {meta.seq_lens.shape[0]} sequences")
    if num_seqs == 0:
        return []
    max_context = meta.block_tables.shape[1] * k_cache.shape[1]
    cfg = config or default_decode_config()
    splits = cfg.num_splits or decode_num_splits(num_seqs, num_kv_heads, max_context, q.device)
    group = num_heads // num_kv_heads
    scale_args, scale_constexprs = scale_operands(k_scale, v_scale, q)
    # Workspace from the caching allocator (inside a graph: from its private pool).
    part_out = torch.empty((num_seqs, num_heads, splits, head_dim), dtype=torch.float32, device=q.device)
    part_lse = torch.empty((num_seqs, num_heads, splits), dtype=torch.float32, device=q.device)
    split_args = (
        q, k_cache, v_cache, part_out, part_lse,
        meta.seq_lens, meta.block_tables,
        *scale_args, float(scale),
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        meta.block_tables.stride(0), k_cache.shape[1], num_heads,
    )
    split_constexprs = dict(
        NUM_SPLITS=splits, GROUP=group, BLOCK_G=max(16, next_pow2(group)),
        HEAD_DIM=head_dim, BLOCK_N=cfg.block_n, BLOCK_D=next_pow2(head_dim),
        **scale_constexprs, PRECISION=dot_precision(q.dtype), DOT_F32=interpreting(),
    )
    reduce_args = (part_out, part_lse, out, out.stride(0), out.stride(1), num_heads)
    reduce_constexprs = dict(NUM_SPLITS=splits, BLOCK_S=next_pow2(splits), HEAD_DIM=head_dim,
                             BLOCK_D=next_pow2(head_dim))
    return [
        Launch(_decode_split_kernel, (num_seqs, num_kv_heads, splits), split_args, split_constexprs,
               dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages)),
        Launch(_decode_reduce_kernel, (num_seqs, num_heads), reduce_args, reduce_constexprs,
               dict(num_warps=cfg.reduce_warps)),
    ]
