"""Speculative decoding inside the continuous batch: prompt lookup (n-gram) or a draft model
proposes tokens, the target verifies them in the same batched forward as everything else.

`build_speculator(spec_cfg, ctx)` is called by LLM.__init__ when `spec_cfg.method` is set; `ctx`
(SpecContext) is all of the engine that speculation sees.
"""
from __future__ import annotations

from ..config import SpeculativeConfig
from .context import SpecContext
from .speculator import Speculator


def build_speculator(spec_cfg: SpeculativeConfig, ctx: SpecContext) -> Speculator:
    if spec_cfg.method == "ngram":
        from .ngram import NgramProposer

        proposer = NgramProposer(spec_cfg.ngram_max, spec_cfg.ngram_min)
    elif spec_cfg.method == "draft":
        from .draft import DraftProposer

        proposer = DraftProposer(spec_cfg, ctx)
    else:
        raise ValueError(f"speculative method must be 'ngram' or 'draft', got {spec_cfg.method!r}")
    return Speculator(spec_cfg, ctx, proposer)


__all__ = ["build_speculator", "SpecContext", "Speculator"]
