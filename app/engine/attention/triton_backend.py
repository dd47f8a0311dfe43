"""The Triton attention backend: torch_ref's interface, backed by the kernels in triton_*.py.

Importing this module does not import triton; the kernels are loaded on first use, so the app
starts on machines without it. `is_available()` says whether the kernels can run here: on a CUDA
device, or on the CPU under the Triton interpreter (TRITON_INTERPRET=1, tests only: slow).

paged_attention sends a pure-decode step (every sequence has one query token) to the split-KV
decode kernels and everything else (prefill, chunked prefill, mixed batches) to the varlen
prefill kernel. New K/V must be stored (store_kv) before attention reads the cache.
"""
from __future__ import annotations

import importlib.util

import torch

from .metadata import AttentionMetadata


def is_available() -> bool:
    """True when triton imports and there is a CUDA device or the interpreter is on."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install counts as absent
        return False
    from .triton_common import interpreting

    return torch.cuda.is_available() or interpreting()


def _check_device(t: torch.Tensor) -> None:
    from .triton_common import interpreting

    if t.device.type == "cuda" or (t.device.type == "cpu" and interpreting()):
        return
    raise ValueError(
        f"the triton attention backend needs CUDA tensors (got {t.device}); use the torch_ref backend "
        "on the CPU, or set TRITON_INTERPRET=1 before importing triton to run the kernels slowly on the CPU"
    )


def store_kv(
    key: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    value: torch.Tensor,  # (num_tokens, num_kv_heads, head_dim)
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,  # (num_tokens,) int, -1 = skip
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
) -> None:
    _check_device(key)
    from .triton_store_kv import store_kv as _store

    _store(key, value, k_cache, v_cache, slot_mapping, k_scale, v_scale)


def paged_attention(
    q: torch.Tensor,  # (num_tokens, num_heads, head_dim)
    k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    k_scale: float | torch.Tensor | None = None,
    v_scale: float | torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:  # (num_tokens, num_heads, head_dim)
    _check_device(q)
    # Pure decode needs one query row per sequence; a padded token list falls back to prefill.
    if meta.is_pure_decode and q.shape[0] == meta.num_seqs:
        from .triton_decode import decode_attention

        return decode_attention(q, k_cache, v_cache, meta, scale, k_scale, v_scale, out=out)
    from .triton_prefill import prefill_attention

    return prefill_attention(q, k_cache, v_cache, meta, scale, k_scale, v_scale, out=out)
