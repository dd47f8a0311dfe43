"""torch_cpu's attention for one pure-decode step of the lean forward (models/lean.py), with what
every layer does alike done once per step.

Per layer, torch_cpu.store_and_attend re-derives from the metadata what is the same for every
layer (is this a decode step, are the slots valid, the step plan, the mask and its two unsqueezes).
`DecodeStep(meta)` does that once; `attend` then stores the new K/V in the pool, appends them to
the layer's dense copy straight from the computed k/v, and runs the same SDPA call. Where the copy
does not simply extend (first decode step, the batch changed, no copy yet or too large) that layer
goes through torch_cpu.store_and_attend, which rebuilds it. Results equal torch_cpu's exactly:
same stored values, same copy, same SDPA inputs. One difference in form, not value: where every
sequence sees all L positions (batch 1 always) no mask is passed; the bool mask would only add
0.0 to every score (tests compare the hidden states bit for bit).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import torch_cpu
from .metadata import AttentionMetadata
from .torch_ref import FP8_DTYPES


class DecodeStep:
    def __init__(self, meta: AttentionMetadata):
        self.meta = meta
        self.plan = torch_cpu._plan(meta)
        self.slots = meta.slot_mapping
        self.L = meta.max_seq_len
        self.lens = list(meta.seq_lens_cpu)
        self.mask = None  # (B, L) bool, True where visible; None: every position of every sequence
        if any(n != self.L for n in self.lens):
            self.mask = torch.arange(self.L).unsqueeze(0) < meta.seq_lens.unsqueeze(1)
        self._float_mask = None  # (B, 1, 1, L) in q's dtype, 0 / -inf: made once, not per layer by SDPA

    @staticmethod
    def applies(meta: AttentionMetadata, k_cache: torch.Tensor) -> bool:
        """A pure-decode step with every slot real (no padding), on a pool that is not fp8."""
        return (meta.is_pure_decode and k_cache.dtype not in FP8_DTYPES and k_cache.device.type == "cpu"
                and torch_cpu._all_slots_valid(meta.slot_mapping))

    def attend(self, q, k, v, a) -> torch.Tensor:
        """q (B, Hq, D), k/v (B, Hkv, D) of PagedAttention `a` -> (B, Hq, D)."""
        kc, vc, meta = a.k_cache, a.v_cache, self.meta
        m = torch_cpu._mirrors.get(id(kc))
        if m is None or m.cache() is not kc or m.k.dtype != q.dtype or not self.plan.extends(m, meta):
            return torch_cpu.store_and_attend(q, k, v, kc, vc, meta, a.scale, a.k_scale, a.v_scale)
        key, value = k.to(kc.dtype), v.to(vc.dtype)  # as stored: the pool's dtype
        kc.view(-1, *kc.shape[2:]).index_copy_(0, self.slots, key)
        vc.view(-1, *vc.shape[2:]).index_copy_(0, self.slots, value)
        idx, D = self.plan.flat_index(m), m.k.shape[3]
        m.k.view(-1, D).index_copy_(0, idx, key.to(q.dtype).reshape(-1, D))
        m.v.view(-1, D).index_copy_(0, idx, value.to(q.dtype).reshape(-1, D))
        m.lens, m.tables = self.lens, meta.block_tables
        torch_cpu.counters["appends"] += 1
        torch_cpu.counters["decode_appends"] += 1
        L = self.L
        o = F.scaled_dot_product_attention(
            q.unsqueeze(2),  # (B, Hq, 1, D)
            m.k[:, :, :L],  # (B, Hkv, L, D)
            m.v[:, :, :L],
            attn_mask=self._mask(q.dtype),
            scale=a.scale,
            enable_gqa=q.shape[1] != kc.shape[2],
        )
        return o.squeeze(2)

    def _mask(self, dtype: torch.dtype):
        if self.mask is None:
            return None
        f = self._float_mask
        if f is None or f.dtype != dtype:  # SDPA's own conversion of a bool mask: 0 / -inf
            f = self._float_mask = torch.zeros(self.mask.shape, dtype=dtype).masked_fill_(
                ~self.mask, float("-inf"))[:, None, None, :]
        return f
