"""The inference engine: paged KV cache, prefix sharing, continuous batching.

Public API: LLM, SamplingParams, RequestOutput, EngineConfig.

The names are imported on first use (PEP 562), so the torch-free modules here (names, config,
block_manager, ...) import without torch: the CLI resolves model names without loading it.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import EngineConfig, SpeculativeConfig
    from .llm import LLM
    from .outputs import RequestOutput
    from .sampling_params import SamplingParams

_HOMES = {"LLM": ".llm", "SamplingParams": ".sampling_params", "RequestOutput": ".outputs",
          "EngineConfig": ".config", "SpeculativeConfig": ".config"}
__all__ = ["LLM", "SamplingParams", "RequestOutput", "EngineConfig", "SpeculativeConfig"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value
