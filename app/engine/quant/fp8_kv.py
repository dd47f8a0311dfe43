"""Scales for an FP8 (e4m3) KV cache: the cache stores x / scale (see attention/torch_ref.py)."""
from __future__ import annotations

import torch

FP8_E4M3_MAX = 448.0


def compute_kv_scale(tensor: torch.Tensor, margin: float = 1.0) -> float:
    """Per-tensor scale so that tensor / scale fits e4m3's finite range (|x / scale| <= 448 / margin).

    Typically called on the keys or values of the first prefill when no calibrated scales are given.
    margin > 1 leaves headroom for later tokens larger than the ones seen. An all-zero (or empty)
    tensor gives 1.0. Raises ValueError on NaN/inf input (a scale from those would be garbage).
    """
    if margin < 1.0:
        raise ValueError(f"margin must be >= 1.0, got {margin}")
    if tensor.numel() == 0:
        return 1.0
    amax = tensor.detach().abs().amax().float().item()
    if amax != amax or amax == float("inf"):
        raise ValueError("compute_kv_scale got NaN or inf values; compute scales from finite activations")
    if amax == 0.0:
        return 1.0
    return amax * margin / FP8_E4M3_MAX
