"""The attention layer of every native model, and the choice of backend behind it.

A backend is a module exposing `store_kv(key, value, k_cache, v_cache, slot_mapping, k_scale,
v_scale)` and `paged_attention(q, k_cache, v_cache, meta, scale, k_scale, v_scale)` with the
semantics of `torch_ref`, and optionally `store_and_attend(q, key, value, k_cache, v_cache, meta,
scale, k_scale, v_scale)`: both in one call, with the same result. New K/V is always stored before
attention reads the cache; prefix sharing within one step relies on that order.
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

from .metadata import AttentionMetadata
from .torch_ref import FP8_DTYPES

BACKENDS = {
    "torch_ref": "app.engine.attention.torch_ref",  # the oracle
    "torch_cpu": "app.engine.attention.torch_cpu",  # torch_ref + a dense decode copy (CPU default)
    "triton": "app.engine.attention.triton_backend",  # CUDA (or the Triton interpreter)
}


def load_backend(name: str):
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {sorted(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


class PagedAttention(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim, self.scale = num_heads, num_kv_heads, head_dim, scale
        self.backend = load_backend("torch_ref")
        # Assigned by the model runner once the KV pool is allocated.
        self.k_cache = torch.empty(0)
        self.v_cache = torch.empty(0)
        # fp8 KV only: this layer's scales (stored value = x / scale), fixed before the first
        # request by the runner's KVCacheSpec (kv_cache_spec.py); never taken from live traffic.
        self.k_scale: float | None = None
        self.v_scale: float | None = None

    def forward(self, q, k, v, meta: AttentionMetadata) -> torch.Tensor:
        """q (T, Hq, D), k/v (T, Hkv, D) -> (T, Hq, D)."""
        b = self.backend
        if self.k_scale is None and self.k_cache.dtype in FP8_DTYPES:
            raise RuntimeError("fp8 KV cache without scales: allocate it through ModelRunner with a "
                               "calibrated KVCacheSpec (app/engine/kv_cache_spec.py)")
        both = getattr(b, "store_and_attend", None)  # optional: store + attend in one call (torch_cpu)
        if both is not None:
            return both(q, k, v, self.k_cache, self.v_cache, meta, self.scale, self.k_scale, self.v_scale)
        b.store_kv(k, v, self.k_cache, self.v_cache, meta.slot_mapping, self.k_scale, self.v_scale)
        return b.paged_attention(q, self.k_cache, self.v_cache, meta, self.scale, self.k_scale, self.v_scale)
