"""A seeded sampled request gives the same tokens with speculation forced on, forced off, or not
configured at all, whatever else is in the batch: speculation skips seeded sampled requests
(app/engine/spec/speculator.py says why), so their generator is advanced exactly as without it."""
from __future__ import annotations

import pytest

from app.engine import LLM, SamplingParams

from .test_spec import repetitive_prompts

SEEDED = SamplingParams(max_tokens=12, temperature=1.0, top_k=4, seed=1234, ignore_eos=True)
OTHERS = [SamplingParams(max_tokens=12, temperature=1.0, top_k=4, ignore_eos=True),  # unseeded
          SamplingParams(max_tokens=12, ignore_eos=True)]  # greedy


@pytest.fixture(scope="module")
def target(tiny_checkpoint):
    return tiny_checkpoint("tiny")


@pytest.fixture(scope="module")
def prompt(target):
    """A prompt the model itself sampled (top-k 4): prompt lookup with ngram_min=1 matches most
    tokens it emits, so a seeded request would be speculated on at nearly every step."""
    start = repetitive_prompts(n=1, seed=7)[0][:8]
    out = LLM(str(target), block_size=4, seed=5).generate([start], SamplingParams(
        max_tokens=40, temperature=1.0, top_k=4, ignore_eos=True))
    return start + out[0].token_ids


@pytest.fixture(scope="module")
def reference(target, prompt):
    """The seeded request alone, on an engine without speculation."""
    return LLM(str(target), block_size=4).generate([prompt], SEEDED)[0].token_ids


@pytest.mark.parametrize("decision", [True, False])
@pytest.mark.parametrize("company", [0, 3])
def test_seeded_request_ignores_speculation_decisions(target, prompt, reference, decision, company):
    llm = LLM(str(target), block_size=4, seed=company, speculative_method="ngram", speculative_ngram_min=1)
    llm.spec.policy.should_speculate = lambda num_running: decision  # force the automatic policy
    # Company: the same self-sampled prompt, so prompt lookup proposes for it at most steps.
    outs = llm.generate([prompt] * (1 + company), [SEEDED] + [OTHERS[i % 2] for i in range(company)])
    assert outs[0].error is None and outs[0].token_ids == reference
    assert "spec_proposed" not in outs[0].metrics  # the seeded request itself was never speculated on
    st = llm.stats
    if decision and company:  # its company was: the forced "on" really speculated
        assert st["spec_proposed_tokens"] > 0 and st["spec_steps"] > 0, st
    if not decision:
        assert st["spec_steps"] == 0, st
