"""The CPU backend (torch_ref + a dense decode copy per layer) == torch_ref, token for token,
through the events that must invalidate the copy: sequences joining and leaving, prefill chunks
mixed with decode, preemption, speculative steps, fp8 KV."""
from __future__ import annotations

import pytest

from app.engine import LLM, SamplingParams
from app.engine.attention import torch_cpu

from .oracle import shared_prefix_prompts

CASES = {
    "plain": dict(block_size=4),
    "chunked": dict(block_size=4, max_num_batched_tokens=7),
    "preempt": dict(block_size=4, kv_cache_memory_gb=96 * 512 / 2**30),
    "fp8-kv": dict(block_size=4, kv_cache_dtype="fp8"),
    "ngram": dict(block_size=4, speculative_method="ngram", speculative_max_batch_size=8),
}


@pytest.mark.parametrize("case", [c if c == "plain" else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_cpu_backend_equals_reference(tiny_checkpoint, case):
    path = str(tiny_checkpoint("tiny"))
    kw = CASES[case]
    prompts = shared_prefix_prompts(n=6, seed=11)
    # Different lengths: sequences leave the batch at different steps.
    params = [SamplingParams(max_tokens=6 + 3 * i, ignore_eos=True) for i in range(len(prompts))]
    ref = LLM(path, attention_backend="torch_ref", **kw).generate(prompts, params)
    # the fused decode step (models/fused_decode.py) reads the pool itself: off, so the copy is used
    fast = LLM(path, attention_backend="torch_cpu", cpu_fused_decode=False, **kw)
    assert fast.load_report.attention_backend == "torch_cpu"
    before = dict(torch_cpu.counters)
    got = fast.generate(prompts, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in ref]
    # The dense copy was really extended step to step (speculative steps included), not just rebuilt.
    assert torch_cpu.counters["appends"] > before["appends"]


def test_cpu_backend_equals_reference_on_the_module_path(tiny_checkpoint):
    """The same with the lean CPU forward off (models/lean.py is on by default and has its own
    attention step): PagedAttention -> torch_cpu.store_and_attend for every step."""
    path = str(tiny_checkpoint("tiny"))
    prompts = shared_prefix_prompts(n=6, seed=11)
    params = [SamplingParams(max_tokens=6 + 3 * i, ignore_eos=True) for i in range(len(prompts))]
    ref = LLM(path, attention_backend="torch_ref", block_size=4, cpu_lean_forward=False).generate(prompts, params)
    fast = LLM(path, attention_backend="torch_cpu", block_size=4, cpu_lean_forward=False)
    before = dict(torch_cpu.counters)
    assert [o.token_ids for o in fast.generate(prompts, params)] == [o.token_ids for o in ref]
    assert torch_cpu.counters["appends"] > before["appends"]
    assert torch_cpu.counters["decode_appends"] == before["decode_appends"]  # the lean step never ran


def test_cpu_backend_is_the_cpu_default(tiny_checkpoint):
    assert LLM(str(tiny_checkpoint("tiny")), device="cpu").load_report.attention_backend == "torch_cpu"


@pytest.mark.slow
def test_requests_joining_mid_decode(tiny_checkpoint):
    path = str(tiny_checkpoint("tiny-llama"))
    prompts = shared_prefix_prompts(n=4, seed=12)
    outs = {}
    for backend in ("torch_ref", "torch_cpu"):
        llm = LLM(path, attention_backend=backend, block_size=4)
        ids, res = {}, {}
        for k, p in enumerate(prompts):
            ids[llm.add_request(p, SamplingParams(max_tokens=10, ignore_eos=True))] = k
            for _ in range(3):  # a few decode steps, then the next request joins
                for o in llm.step():
                    res[ids[o.request_id]] = o.token_ids
        while llm.has_unfinished():
            for o in llm.step():
                res[ids[o.request_id]] = o.token_ids
        outs[backend] = res
    assert outs["torch_cpu"] == outs["torch_ref"]


@pytest.mark.slow
@pytest.mark.parametrize("draft_seed", [None, 7], ids=["draft-copy", "draft-other"])
def test_cpu_backend_with_draft_speculation(tiny_checkpoint, draft_seed):
    """Multi-token verification steps through the dense copy: every proposal accepted (copy) or
    many rejected (another random draft), so stale positions must be overwritten correctly."""
    path = str(tiny_checkpoint("tiny"))
    draft = path if draft_seed is None else str(tiny_checkpoint("tiny", seed=draft_seed))
    kw = dict(block_size=4, speculative_method="draft", speculative_draft_model=draft, speculative_max_batch_size=8)
    prompts = shared_prefix_prompts(n=4, seed=13)
    params = [SamplingParams(max_tokens=8 + 4 * i, ignore_eos=True) for i in range(len(prompts))]
    ref = LLM(path, attention_backend="torch_ref", block_size=4).generate(prompts, params)
    before = dict(torch_cpu.counters)
    llm = LLM(path, attention_backend="torch_cpu", cpu_fused_decode=False, **kw)
    got = llm.generate(prompts, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in ref]
    assert torch_cpu.counters["appends"] > before["appends"]
    assert llm.stats["spec_proposed_tokens"] > 0
