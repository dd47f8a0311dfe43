"""Typed load errors: which optional feature could not be set up, so callers never parse tracebacks.

An `LLM` built with `optional_features=(...)` turns those features off in place when they fail at
load (no weights are read twice) and lists them in `load_report.disabled_features`. A feature
that fails without being optional, or whose failure left the model unusable (weights half
quantized), raises `UnsupportedFeature`; the caller may turn it off and load again.
"""
from __future__ import annotations

# The features a load may turn off, named as the load report and the generator name them.
FEATURES = ("quantization", "kv_cache_quantization", "speculative_decoding", "draft_model", "compilation")


class UnsupportedFeature(ValueError):
    """`feature` (one of FEATURES) could not be set up on this machine / model; `reason` says why.
    A ValueError: like other bad settings, it is the caller's to change (the CLI prints it plainly)."""

    def __init__(self, feature: str, reason: str) -> None:
        assert feature in FEATURES, feature
        super().__init__(f"{feature} could not be set up: {reason}")
        self.feature = feature
        self.reason = reason
