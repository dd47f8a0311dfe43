"""Engine greedy output == transformers `generate`, token for token, across the settings that
change how the work is cut up: prefix caching, chunked prefill, preemption, block sizes, shards."""
from __future__ import annotations

import pytest

from app.engine import LLM, SamplingParams

from .oracle import hf_greedy, run_staggered, shared_prefix_prompts

MAX_NEW = 10


def check_against_oracle(path, llm, prompts, max_new=MAX_NEW):
    outs = llm.generate(prompts, SamplingParams(max_tokens=max_new))
    for p, o in zip(prompts, outs):
        assert o.error is None, o.error
        assert o.token_ids == hf_greedy(path, p, max_new), f"prompt of {len(p)} tokens diverged"
    return outs


@pytest.mark.parametrize("preset", ["tiny"] + [pytest.param(p, marks=pytest.mark.slow) for p in (
    "tiny-untied", "tiny-llama", "tiny-llama3", "tiny-mistral", "tiny-qwen3")])
def test_each_native_architecture_matches_transformers(tiny_checkpoint, preset):
    path = tiny_checkpoint(preset)
    llm = LLM(str(path), block_size=4)
    outs = check_against_oracle(path, llm, shared_prefix_prompts())
    # The 21-token shared prefix holds 5 full blocks of 4, computed once and reused.
    assert all(o.num_cached_tokens == 20 for o in outs[1:])


@pytest.mark.parametrize("block_size,prefix_caching", [
    (b, c) if (b, c) == (5, True) else pytest.param(b, c, marks=pytest.mark.slow)
    for b in (1, 5, 16) for c in (True, False)])
def test_block_sizes_and_prefix_caching(tiny_checkpoint, block_size, prefix_caching):
    path = tiny_checkpoint("tiny")
    llm = LLM(str(path), block_size=block_size, enable_prefix_caching=prefix_caching)
    outs = check_against_oracle(path, llm, shared_prefix_prompts())
    cached = [o.num_cached_tokens for o in outs]
    if prefix_caching:
        assert cached[1:] == [21 // block_size * block_size] * 4
    else:
        assert cached == [0] * 5


def test_chunked_prefill_with_tiny_token_budget(tiny_checkpoint):
    path = tiny_checkpoint("tiny-llama")
    llm = LLM(str(path), block_size=4, max_num_batched_tokens=7)
    check_against_oracle(path, llm, shared_prefix_prompts())
    assert llm.stats["steps"] > MAX_NEW + 10  # prompts really were cut into chunks


def test_preemption_with_tiny_kv_pool(tiny_checkpoint):
    path = tiny_checkpoint("tiny")
    # 2 layers x 2 KV heads x 16 dims x 4 bytes x 2 (K,V) = 512 B per token; 96 tokens of KV.
    llm = LLM(str(path), block_size=4, kv_cache_memory_gb=96 * 512 / 2**30)
    prompts = shared_prefix_prompts(n=6)
    check_against_oracle(path, llm, prompts, max_new=16)
    assert llm.stats["preemptions"] > 0


@pytest.mark.slow
def test_sharded_checkpoint(tiny_checkpoint):
    path = tiny_checkpoint("tiny-untied", max_shard_size="40KB")
    assert len(list(path.glob("*.safetensors"))) > 1
    check_against_oracle(path, LLM(str(path), block_size=16), shared_prefix_prompts(n=3))


def test_requests_joining_mid_flight_match(tiny_checkpoint):
    """Continuous batching: requests added while others decode still match the oracle."""
    path = tiny_checkpoint("tiny")
    llm = LLM(str(path), block_size=4)
    prompts = shared_prefix_prompts(n=4, seed=3)
    results = run_staggered(llm, prompts, SamplingParams(max_tokens=MAX_NEW))
    for i, p in enumerate(prompts):
        assert results[i].token_ids == hf_greedy(path, p, MAX_NEW)
    assert llm.stats["max_seqs_in_step"] > 1
