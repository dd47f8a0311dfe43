"""CPU attention backend: torch_ref, plus a dense per-layer copy of the batch's context for decode.

On the CPU, paged decode spends about a fifth of each step gathering every sequence's whole
context out of the block pool, for every layer, only to read it once. During a run of decode
steps the batch rarely changes: each sequence just grows by one token. This backend keeps, per
layer, the last gathered (num_seqs, num_kv_heads, capacity, head_dim) K and V, and when the next
step's batch is the same sequences with a few new tokens each (one for decode, k+1 for a
speculative verification; same block tables), writes those tokens instead of gathering again.
Anything else (a sequence joined, left or was preempted, capacity exceeded) rebuilds it from the
pool with torch_ref's gather; prefill steps (more than MAX_MIRROR_QUERY new tokens per sequence)
go to torch_ref and drop the copy.

The result equals torch_ref's exactly (same values, same SDPA call); tests compare them token
for token. Prefill is torch_ref's.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from . import torch_ref
from .metadata import AttentionMetadata
from .torch_ref import gather_kv

HEADROOM = 64  # extra positions allocated per rebuild, so appends rarely trigger a rebuild
MAX_MIRROR_QUERY = 16  # steps with more new tokens per sequence (prefill) go to torch_ref
MAX_MIRROR_BYTES = 64 << 20  # per layer (K and V); larger batches or contexts fall back to gathering


class _Mirror:
    __slots__ = ("cache", "k", "v", "lens", "tables", "block_size")

    def __init__(self, cache, k, v, lens, tables):
        self.cache = weakref.ref(cache)  # ids are reused after a tensor dies: check identity too
        self.k, self.v, self.lens, self.tables = k, v, lens, tables
        self.block_size = cache.shape[1]


_mirrors: dict[int, _Mirror] = {}  # id(k_cache) -> the layer's dense copy
# for tests and profiling; decode_appends: appends by torch_cpu_decode.DecodeStep (the lean forward)
counters = {"appends": 0, "rebuilds": 0, "decode_appends": 0}


def reset() -> None:
    _mirrors.clear()
    _last_plan[0] = None
    _last_slots[0] = None


# (weakref to the step's slot_mapping, whether every slot is >= 0). Every layer of a step gets the
# same slot_mapping tensor (built fresh by ModelRunner.prepare each step), so the check and its
# host sync run once per step instead of once per layer.
_last_slots: list = [None]


def _all_slots_valid(slot_mapping: torch.Tensor) -> bool:
    c = _last_slots[0]
    if c is None or c[0]() is not slot_mapping:
        c = _last_slots[0] = (weakref.ref(slot_mapping), bool((slot_mapping >= 0).all()))
    return c[1]


def store_kv(key, value, k_cache, v_cache, slot_mapping, k_scale=None, v_scale=None):
    """torch_ref.store_kv, with the padding check done once per step (see _all_slots_valid).
    Returns the (T, Hkv, D) key and value as stored (in the cache dtype), or None where the cache
    holds them in another form (fp8) or some were skipped (padding)."""
    if torch_ref.is_fp8(k_cache.dtype) or not _all_slots_valid(slot_mapping):
        torch_ref.store_kv(key, value, k_cache, v_cache, slot_mapping, k_scale, v_scale)
        return None
    key, value = key.to(k_cache.dtype), value.to(v_cache.dtype)
    k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, slot_mapping, key)
    v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, slot_mapping, value)
    return key, value


def store_and_attend(q, key, value, k_cache, v_cache, meta: AttentionMetadata, scale: float, k_scale=None,
                     v_scale=None) -> torch.Tensor:
    """store_kv then paged_attention, with the new tokens written into the dense copy from the
    stored key/value themselves instead of read back out of the pool (the same values: what
    the pool holds at those slots is exactly `stored`)."""
    stored = store_kv(key, value, k_cache, v_cache, meta.slot_mapping, k_scale, v_scale)
    return paged_attention(q, k_cache, v_cache, meta, scale, k_scale, v_scale, stored=stored)


def paged_attention(
    q: torch.Tensor,  # (num_tokens, num_heads, head_dim)
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    k_scale=None,
    v_scale=None,
    stored: tuple[torch.Tensor, torch.Tensor] | None = None,  # this step's K/V as store_kv wrote them
) -> torch.Tensor:
    if meta.max_query_len > MAX_MIRROR_QUERY or q.shape[0] != sum(meta.query_lens_cpu):
        _mirrors.pop(id(k_cache), None)  # prefill: torch_ref (gathering whole prompts is its job)
        return torch_ref.paged_attention(q, k_cache, v_cache, meta, scale, k_scale, v_scale)
    m = _mirror(q, k_cache, v_cache, meta, k_scale, v_scale, stored)
    if m is None:
        return torch_ref.paged_attention(q, k_cache, v_cache, meta, scale, k_scale, v_scale)
    if not meta.is_pure_decode:  # a few tokens per sequence (speculative verification)
        return _attend_rows(q, m, meta, scale)
    L = meta.max_seq_len
    plan = _plan(meta)
    if plan.valid is None:
        plan.valid = torch.arange(L, device=q.device).unsqueeze(0) < meta.seq_lens.to(q.device).unsqueeze(1)
    valid = plan.valid
    o = F.scaled_dot_product_attention(
        q.unsqueeze(2),  # (B, Hq, 1, D)
        m.k[:, :, :L],  # (B, Hkv, L, D): rows of D contiguous, as SDPA reads them without a copy
        m.v[:, :, :L],
        attn_mask=valid[:, None, None, :],
        scale=scale,
        enable_gqa=q.shape[1] != k_cache.shape[2],
    )
    return o.squeeze(2)


def _mirror(q, k_cache, v_cache, meta: AttentionMetadata, k_scale, v_scale, stored=None) -> _Mirror | None:
    key = id(k_cache)
    lens = meta.seq_lens_cpu
    m = _mirrors.get(key)
    plan = _plan(meta)
    if m is not None and m.cache() is k_cache and plan.extends(m, meta):
        # Write this step's new tokens (already stored in the pool by store_kv) at their positions:
        # one index_copy_ into the flat (B*Hkv*cap, D) view (cheaper than m.k[rows, :, pos] = ...).
        idx = plan.flat_index(m)  # (T*Hkv,)
        slots, D = meta.slot_mapping, m.k.shape[3]
        if stored is not None:  # the values the pool now holds at `slots`, without reading them back
            new_k, new_v = stored[0].to(q.dtype), stored[1].to(q.dtype)
        else:
            new_k, new_v = _read(k_cache, slots, q.dtype, k_scale), _read(v_cache, slots, q.dtype, v_scale)
        m.k.view(-1, D).index_copy_(0, idx, new_k.reshape(-1, D))
        m.v.view(-1, D).index_copy_(0, idx, new_v.reshape(-1, D))
        m.lens, m.tables = list(lens), meta.block_tables
        counters["appends"] += 1
        return m
    cap = meta.max_seq_len + HEADROOM
    nbytes = 2 * len(lens) * cap * k_cache.shape[2] * k_cache.shape[3] * q.element_size()
    if nbytes > MAX_MIRROR_BYTES:
        _mirrors.pop(key, None)
        return None
    counters["rebuilds"] += 1
    k = _dense(k_cache, meta, cap, q.dtype, k_scale)
    v = _dense(v_cache, meta, cap, q.dtype, v_scale)
    m = _mirrors[key] = _Mirror(k_cache, k, v, list(lens), meta.block_tables)
    return m


class _StepPlan:
    """What every layer of one step computes alike from the step's metadata (the mask, the rows and
    positions of the new tokens, whether the mirrors extend): computed by the first layer, reused
    by the others (per-step bookkeeping was repeated num_layers times)."""

    def __init__(self, meta: AttentionMetadata):
        self.meta = weakref.ref(meta)
        self.valid = self.rows = self.pos = None
        self._extends: dict[tuple, bool] = {}
        self._flat: dict[tuple, torch.Tensor] = {}

    def flat_index(self, m: _Mirror) -> torch.Tensor:
        """(T*Hkv,) int64: row of each new token's (token, kv head) in m.k viewed as (B*Hkv*cap, D)."""
        B, H, cap, _ = m.k.shape
        if (H, cap) not in self._flat:
            meta = self.meta()
            if meta.is_pure_decode:  # token i is sequence i's last position: a few numbers, in Python
                self._flat[(H, cap)] = torch.tensor(
                    [(i * H + h) * cap + n - 1 for i, n in enumerate(meta.seq_lens_cpu) for h in range(H)])
                return self._flat[(H, cap)]
            if self.rows is None:
                qlens, lens = meta.query_lens_cpu, meta.seq_lens_cpu
                self.rows = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(qlens))  # (T,)
                self.pos = torch.cat([torch.arange(n - q, n) for n, q in zip(lens, qlens)])  # (T,)
            heads = torch.arange(H).unsqueeze(0)  # (1, H)
            self._flat[(H, cap)] = ((self.rows.unsqueeze(1) * H + heads) * cap + self.pos.unsqueeze(1)).reshape(-1)
        return self._flat[(H, cap)]

    def extends(self, m: _Mirror, meta: AttentionMetadata) -> bool:
        # every layer's mirror was last updated by the same step: same lens and tables object
        key = (tuple(m.lens), id(m.tables), m.k.shape[2], m.block_size)
        if key not in self._extends:
            self._extends[key] = _extends(m, meta)
        return self._extends[key]


_last_plan: list[_StepPlan | None] = [None]


def _plan(meta: AttentionMetadata) -> _StepPlan:
    p = _last_plan[0]
    if p is None or p.meta() is not meta:
        p = _last_plan[0] = _StepPlan(meta)
    return p


def _extends(m: _Mirror, meta: AttentionMetadata) -> bool:
    """Same sequences in the same order, each one's new tokens starting within what the copy holds
    (at most its old length: after rejected proposals the copy holds a few stale positions, which
    this step overwrites), and the blocks under the kept positions unchanged."""
    lens = meta.seq_lens_cpu
    if len(lens) != len(m.lens) or max(lens) > m.k.shape[2]:
        return False
    starts = [n - q for n, q in zip(lens, meta.query_lens_cpu)]
    if any(s > old or s < 0 for s, old in zip(starts, m.lens)):
        return False
    # The blocks holding each sequence's kept tokens must be the same (new blocks may be appended;
    # padding entries past a sequence's blocks are meaningless).
    old, new = m.tables, meta.block_tables
    w = min(old.shape[1], new.shape[1])
    if torch.equal(old[:, :w], new[:, :w]):  # the usual case, in one op: nothing changed
        return True
    used = torch.arange(w).unsqueeze(0) < ((torch.tensor(starts) + m.block_size - 1) // m.block_size).unsqueeze(1)
    return bool(((old[:, :w] == new[:, :w]) | ~used).all())


def _read(cache, slots, dtype, scale) -> torch.Tensor:
    """(B, Hkv, D) values at the given slots, dequantized like torch_ref.gather_kv."""
    flat = cache.view(-1, *cache.shape[2:])  # (num_slots, Hkv, D)
    if not torch_ref.is_fp8(cache.dtype):
        # index_select is a plain row copy; it rejects -1 (padding), which plain indexing accepted
        return (flat.index_select(0, slots) if _all_slots_valid(slots) else flat[slots]).to(dtype)
    x = flat.view(torch.uint8)[slots].view(cache.dtype)
    return (x.to(torch.float32) * (scale if scale is not None else 1.0)).to(dtype)


def _dense(cache, meta, cap, dtype, scale) -> torch.Tensor:
    """(num_seqs, num_kv_heads, cap, head_dim): the first max_seq_len positions gathered."""
    L = meta.max_seq_len
    out = torch.zeros(meta.num_seqs, cache.shape[2], cap, cache.shape[3], dtype=dtype, device=cache.device)
    out[:, :, :L] = gather_kv(cache, meta.block_tables, L, dtype, scale).transpose(1, 2)
    return out


def _attend_rows(q, m: _Mirror, meta: AttentionMetadata, scale: float) -> torch.Tensor:
    """Several query tokens per sequence: each sequence's rows against its copy, lower-right causal."""
    out = torch.empty_like(q)
    start = 0
    for i, (qlen, slen) in enumerate(zip(meta.query_lens_cpu, meta.seq_lens_cpu)):
        k = m.k[i, :, :slen].transpose(0, 1)  # (slen, Hkv, D)
        v = m.v[i, :, :slen].transpose(0, 1)
        out[start : start + qlen] = torch_ref._attend(q[start : start + qlen], k, v, scale)
        start += qlen
    return out
