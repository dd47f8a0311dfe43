"""Token sampling on the device: greedy, temperature, top-k, top-p, per-request seeds.

Seeded requests draw from their own torch.Generator, so the same seed gives the same output
whatever else is in the batch. Unseeded rows share the engine's generator and are drawn in one
batched operation (exponential race: argmax(p / E), E ~ Exp(1), is a sample from p).
"""
from __future__ import annotations

import torch


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """logits (B, V) float32; top_k (B,) int (0 = off); top_p (B,) float (1 = off)."""
    V = logits.shape[-1]
    sorted_logits, idx = logits.sort(dim=-1, descending=True)
    k = torch.where(top_k > 0, top_k.clamp(max=V), torch.full_like(top_k, V))
    ranks = torch.arange(V, device=logits.device).unsqueeze(0)
    drop = ranks >= k.unsqueeze(1)
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
    before = probs.cumsum(-1) - probs
    drop |= before >= top_p.unsqueeze(1)
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)


def sample(
    logits: torch.Tensor,  # (B, V) float32
    temperature: list[float],
    top_k: list[int],
    top_p: list[float],
    generators: list[torch.Generator | None],
    shared_generator: torch.Generator | None = None,
) -> torch.Tensor:  # (B,) int64
    greedy = logits.argmax(dim=-1)
    if all(t == 0.0 for t in temperature):
        return greedy
    dev = logits.device
    t = _on(dev, [x if x > 0 else 1.0 for x in temperature], torch.float32).unsqueeze(1)
    scaled = logits / t
    if any(k > 0 for k in top_k) or any(p < 1.0 for p in top_p):
        scaled = apply_top_k_top_p(
            scaled, _on(dev, top_k, torch.int64), _on(dev, top_p, torch.float32)
        )
    probs = scaled.softmax(-1)
    noise = torch.empty_like(probs).exponential_(generator=shared_generator)
    for i, g in enumerate(generators):
        if g is not None and temperature[i] > 0:
            noise[i].exponential_(generator=g)
    sampled = (probs / noise).argmax(-1)
    is_greedy = _on(dev, [x == 0.0 for x in temperature], torch.bool)
    return torch.where(is_greedy, greedy, sampled)


def _on(dev: torch.device, values: list, dtype: torch.dtype) -> torch.Tensor:
    """Host values on the device without a host sync (async scheduling keeps launching ahead):
    a blocking copy (torch.tensor(..., device=cuda)) waits for the stream; a pinned non-blocking one does not."""
    cpu = torch.tensor(values, dtype=dtype)
    return cpu.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else cpu
