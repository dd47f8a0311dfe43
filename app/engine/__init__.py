"""The inference engine: paged KV cache, prefix sharing, continuous batching.

Public API: LLM, SamplingParams, RequestOutput, EngineConfig.
"""
from .config import EngineConfig, SpeculativeConfig
from .llm import LLM
from .outputs import RequestOutput
from .sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams", "RequestOutput", "EngineConfig", "SpeculativeConfig"]
