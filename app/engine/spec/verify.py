"""Verification of proposed tokens against the target model's logits.

Greedy: accept the longest prefix of proposals equal to the target's argmax, then emit the
target's argmax at the first mismatch (or after the last proposal): exactly the tokens plain
greedy decoding would produce.

Sampling: the standard speculative-sampling rule (Leviathan et al. 2023; Chen et al. 2023).
Proposal x drawn from q is accepted with probability min(1, p(x) / q(x)); on rejection the
token is drawn from the residual norm(max(0, p - q)); after k acceptances a bonus token is drawn
from p. Every emitted token then follows the target distribution p exactly. For prompt lookup,
q is a point mass on x, so acceptance is p(x) and the residual is p with x removed.
p is the distribution plain sampling uses (temperature, then top-k / top-p; layers/sampler.py).
"""
from __future__ import annotations

import torch

from ..layers.sampler import apply_top_k_top_p


def processed_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """logits (R, V) float32 -> the sampling distribution (R, V) of layers/sampler.py."""
    scaled = logits.float() / temperature
    if top_k > 0 or top_p < 1.0:
        R, dev = scaled.shape[0], scaled.device
        scaled = apply_top_k_top_p(scaled, torch.full((R,), top_k, device=dev, dtype=torch.long),
                                   torch.full((R,), top_p, device=dev, dtype=torch.float32))
    return scaled.softmax(-1)


def greedy_accept(logits: torch.Tensor, proposals: list[int]) -> list[int]:
    """logits (k+1, V) for the rows after the last confirmed token and after each proposal."""
    target = logits.argmax(-1).tolist()
    a = 0
    while a < len(proposals) and proposals[a] == target[a]:
        a += 1
    return proposals[:a] + [target[a]]


def rejection_sample(p: torch.Tensor, proposals: list[int], q: torch.Tensor | None,
                     generator: torch.Generator | None) -> list[int]:
    """p (k+1, V) target probabilities; q (k, V) draft probabilities, or None for point masses.
    Returns the accepted proposals followed by one token drawn from the residual (or bonus)."""
    dev = p.device
    out: list[int] = []
    for j, x in enumerate(proposals):
        px = float(p[j, x])
        qx = float(q[j, x]) if q is not None else 1.0
        u = float(torch.rand((), device=dev, generator=generator))
        if qx > 0 and u * qx < px:  # u < p(x) / q(x), written without dividing
            out.append(x)
            continue
        if q is not None:
            residual = (p[j] - q[j]).clamp_min(0)
        else:
            residual = p[j].clone()
            residual[x] = 0
        if float(residual.sum()) <= 0:  # p == q on the support: nothing left but p itself
            residual = p[j]
        out.append(int(torch.multinomial(residual, 1, generator=generator)))
        return out
    out.append(int(torch.multinomial(p[len(proposals)], 1, generator=generator)))
    return out
