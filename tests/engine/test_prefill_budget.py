"""The per-step token budget (EngineConfig.max_num_batched_tokens): 1024 by default on the CPU
(8192 there for 4-bit weights, and on a GPU), an explicit value kept; a prefill cut into chunks by
it gives the same greedy tokens as in one step (against the HF oracle as well:
test_engine_exact.test_chunked_prefill_with_tiny_token_budget)."""
from __future__ import annotations

import pytest
import torch

from app.engine import LLM, SamplingParams
from app.engine.config import CPU_MAX_NUM_BATCHED_TOKENS, MAX_NUM_BATCHED_TOKENS, EngineConfig

from .oracle import shared_prefix_prompts


def _resolved(device, weights=None, **kw):
    return EngineConfig(model="x", **kw).resolve_max_num_batched_tokens(device, weights)


def test_budget_by_device_and_weights_unless_given():
    assert (CPU_MAX_NUM_BATCHED_TOKENS, MAX_NUM_BATCHED_TOKENS) == (1024, 8192)
    assert EngineConfig(model="x").max_num_batched_tokens is None
    assert _resolved(torch.device("cpu")) == _resolved("cpu", "8bit") == 1024
    assert _resolved("cpu", "4bit") == 8192  # int4 prefill dequantizes per step: fewer steps pay
    assert _resolved(torch.device("cuda", 0)) == _resolved("cuda", "8bit") == 8192
    for dev, weights in [("cpu", None), ("cpu", "4bit"), ("cuda", None)]:
        assert _resolved(dev, weights, max_num_batched_tokens=7) == 7
    for bad in (0, -1, 2.5, "big"):
        with pytest.raises(ValueError, match="max_num_batched_tokens"):
            EngineConfig(model="x", max_num_batched_tokens=bad)


def test_cpu_engine_default_and_chunks_equal_one_step(tiny_checkpoint):
    path = str(tiny_checkpoint("tiny"))
    prompts = shared_prefix_prompts(n=3)
    sp = SamplingParams(max_tokens=6, ignore_eos=True)
    default = LLM(path, device="cpu", block_size=4)
    assert default.config.max_num_batched_tokens == default.scheduler.max_num_batched_tokens == 1024
    one_step = LLM(path, device="cpu", block_size=4, max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS)
    chunked = LLM(path, device="cpu", block_size=4, max_num_batched_tokens=10)  # prompts are ~25-30 tokens
    want = [o.token_ids for o in one_step.generate(prompts, sp)]
    assert [o.token_ids for o in chunked.generate(prompts, sp)] == want
    assert [o.token_ids for o in default.generate(prompts, sp)] == want
    assert chunked.stats["steps"] > one_step.stats["steps"] + 3  # the prompts really were cut


@pytest.mark.parametrize("fmt, kernels, budget", [("8bit", "auto", 1024), ("4bit", "torch", 8192),
                                                  ("4bit", "auto", None)])
def test_cpu_default_follows_the_loaded_weights(tiny_checkpoint, fmt, kernels, budget):
    """4 bits through torch's kernels dequantize per prefill step (8192: fewer steps); through the
    VNNI kernel (quant/vnni.py, where it builds) nothing is dequantized and 1024 holds."""
    from app.engine.quant import vnni

    if budget is None:
        budget = 1024 if vnni.available() else 8192
    llm = LLM(str(tiny_checkpoint("tiny")), device="cpu", quantization=fmt, quant_cache_dir="", block_size=4,
              cpu_kernels=kernels)
    assert llm.load_report.quantization.format == fmt
    assert llm.config.max_num_batched_tokens == llm.scheduler.max_num_batched_tokens == budget
