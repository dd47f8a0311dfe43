"""The per-step token budget (EngineConfig.max_num_batched_tokens): 512 by default on the CPU,
8192 elsewhere, an explicit value kept; a prefill cut into chunks by it gives the same greedy
tokens as in one step (against the HF oracle: test_engine_exact.test_chunked_prefill_with_tiny_token_budget)."""
from __future__ import annotations

import pytest
import torch

from app.engine import LLM, SamplingParams
from app.engine.config import CPU_MAX_NUM_BATCHED_TOKENS, MAX_NUM_BATCHED_TOKENS, EngineConfig

from .oracle import shared_prefix_prompts


def test_budget_by_device_unless_given():
    assert (CPU_MAX_NUM_BATCHED_TOKENS, MAX_NUM_BATCHED_TOKENS) == (512, 8192)
    assert EngineConfig(model="x").max_num_batched_tokens is None
    assert EngineConfig(model="x").resolve_max_num_batched_tokens(torch.device("cpu")) == 512
    assert EngineConfig(model="x").resolve_max_num_batched_tokens(torch.device("cuda", 0)) == 8192
    assert EngineConfig(model="x").resolve_max_num_batched_tokens("cpu") == 512
    for dev in ("cpu", "cuda"):
        assert EngineConfig(model="x", max_num_batched_tokens=7).resolve_max_num_batched_tokens(dev) == 7
    for bad in (0, -1, 2.5, "big"):
        with pytest.raises(ValueError, match="max_num_batched_tokens"):
            EngineConfig(model="x", max_num_batched_tokens=bad)


def test_cpu_engine_default_and_chunks_equal_one_step(tiny_checkpoint):
    path = str(tiny_checkpoint("tiny"))
    prompts = shared_prefix_prompts(n=3)
    sp = SamplingParams(max_tokens=6, ignore_eos=True)
    default = LLM(path, device="cpu", block_size=4)
    assert default.config.max_num_batched_tokens == CPU_MAX_NUM_BATCHED_TOKENS
    assert default.scheduler.max_num_batched_tokens == CPU_MAX_NUM_BATCHED_TOKENS
    one_step = LLM(path, device="cpu", block_size=4, max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS)
    chunked = LLM(path, device="cpu", block_size=4, max_num_batched_tokens=10)  # prompts are ~25-30 tokens
    want = [o.token_ids for o in one_step.generate(prompts, sp)]
    assert [o.token_ids for o in chunked.generate(prompts, sp)] == want
    assert [o.token_ids for o in default.generate(prompts, sp)] == want
    assert chunked.stats["steps"] > one_step.stats["steps"] + 3  # the prompts really were cut
