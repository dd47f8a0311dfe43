"""Pure-torch paged attention: the CPU path and the oracle every faster backend is tested against.

Handles GQA (num_heads a multiple of num_kv_heads), lower-right causal masking (chunked prefill
and decode see the cached prefix), and FP8 KV storage (values stored as x / scale in
float8_e4m3fn, dequantized on read).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .metadata import AttentionMetadata

FP8_DTYPES = tuple(
    getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)
)


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8_DTYPES


def store_kv(
    key: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    value: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,  # (num_tokens,) int64, -1 = skip
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
) -> None:
    keep = slot_mapping >= 0
    if not bool(keep.all()):
        key, value, slot_mapping = key[keep], value[keep], slot_mapping[keep]
    kf = k_cache.view(-1, *k_cache.shape[2:])  # (num_slots, num_kv_heads, head_dim)
    vf = v_cache.view(-1, *v_cache.shape[2:])
    if is_fp8(k_cache.dtype):
        k_q = (key.float() / (k_scale if k_scale is not None else 1.0)).to(k_cache.dtype)
        v_q = (value.float() / (v_scale if v_scale is not None else 1.0)).to(v_cache.dtype)
        # index_copy_ is not implemented for fp8 on CPU: write through a uint8 view.
        kf.view(torch.uint8).index_copy_(0, slot_mapping, k_q.view(torch.uint8))
        vf.view(torch.uint8).index_copy_(0, slot_mapping, v_q.view(torch.uint8))
    else:
        kf.index_copy_(0, slot_mapping, key.to(k_cache.dtype))
        vf.index_copy_(0, slot_mapping, value.to(v_cache.dtype))


def gather_kv(
    cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    block_table: torch.Tensor,  # (num_seqs, max_blocks) int32
    length: int,
    out_dtype: torch.dtype,
    scale: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """The first `length` positions of each sequence: (num_seqs, length, num_kv_heads, head_dim)."""
    bs = cache.shape[1]
    nb = (length + bs - 1) // bs
    idx = block_table[:, :nb].reshape(-1).long()
    # index_select over whole blocks (contiguous rows) is a plain row copy, faster than indexing.
    blocks = cache.view(cache.shape[0], -1).index_select(0, idx)  # (num_seqs * nb, bs*Hkv*D)
    kv = blocks.view(block_table.shape[0], nb * bs, *cache.shape[2:])[:, :length]
    if is_fp8(cache.dtype):
        kv = kv.to(torch.float32) * (scale if scale is not None else 1.0)
    return kv.to(out_dtype)


def paged_attention(
    q: torch.Tensor,  # (num_tokens, num_heads, head_dim)
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
) -> torch.Tensor:  # (num_tokens, num_heads, head_dim)
    if meta.is_pure_decode:
        return _decode(q, k_cache, v_cache, meta, scale, k_scale, v_scale)
    out = torch.empty_like(q)
    start = 0
    for i, (qlen, slen) in enumerate(zip(meta.query_lens_cpu, meta.seq_lens_cpu)):
        s, start = start, start + qlen
        bt = meta.block_tables[i : i + 1]
        k = gather_kv(k_cache, bt, slen, q.dtype, k_scale)[0]  # (slen, Hkv, D)
        v = gather_kv(v_cache, bt, slen, q.dtype, v_scale)[0]
        out[s : s + qlen] = _attend(q[s : s + qlen], k, v, scale)
    return out


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """One sequence: q (n, Hq, D) are the last n of the L positions in k, v (L, Hkv, D)."""
    n, L = q.shape[0], k.shape[0]
    if n == L:  # no cached prefix: plain causal (SDPA's top-left alignment is right here)
        mask, causal = None, True
    else:
        qi = torch.arange(n, device=q.device).unsqueeze(1) + (L - n)
        mask, causal = torch.arange(L, device=q.device).unsqueeze(0) <= qi, False  # lower-right
    o = F.scaled_dot_product_attention(
        q.transpose(0, 1).unsqueeze(0),  # (1, Hq, n, D)
        k.transpose(0, 1).unsqueeze(0),  # (1, Hkv, L, D)
        v.transpose(0, 1).unsqueeze(0),
        attn_mask=mask,
        is_causal=causal,
        scale=scale,
        enable_gqa=q.shape[1] != k.shape[1],
    )
    return o[0].transpose(0, 1)


def _decode(q, k_cache, v_cache, meta, scale, k_scale, v_scale):
    """All sequences have one query token: one padded batched SDPA call."""
    L = meta.max_seq_len
    k = gather_kv(k_cache, meta.block_tables, L, q.dtype, k_scale)  # (B, L, Hkv, D)
    v = gather_kv(v_cache, meta.block_tables, L, q.dtype, v_scale)
    valid = torch.arange(L, device=q.device).unsqueeze(0) < meta.seq_lens.to(q.device).unsqueeze(1)
    o = F.scaled_dot_product_attention(
        q.unsqueeze(2),  # (B, Hq, 1, D)
        k.transpose(1, 2),  # (B, Hkv, L, D)
        v.transpose(1, 2),
        attn_mask=valid[:, None, None, :],
        scale=scale,
        enable_gqa=q.shape[1] != k.shape[2],
    )
    return o.squeeze(2)
