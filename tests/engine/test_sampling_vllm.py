"""vLLM-compatible sampling through the real engine: n, min_tokens, include_stop_str_in_output,
top_k=-1, stop-token text, EOS text with skip_special_tokens=False, logprobs."""
from __future__ import annotations

import math

import pytest

from app.engine import LLM, SamplingParams

from .oracle import shared_prefix_prompts


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "async"])
def llm(tiny_checkpoint, request):
    """Every case runs with the plain step loop and with async scheduling (the overlapped loop,
    forced on the CPU): min_tokens and log-probs must see the token still in flight."""
    return LLM(str(tiny_checkpoint("tiny")), block_size=4, async_scheduling=request.param)


@pytest.fixture(scope="module")
def prompt():
    return shared_prefix_prompts(n=1, seed=11)[0]


def test_n_samples_are_the_single_requests_with_seed_plus_i(llm, prompt):
    sp = SamplingParams(max_tokens=10, temperature=1.0, seed=5, n=3, ignore_eos=True)
    out = llm.generate([prompt], sp)[0]
    singles = [llm.generate([prompt], SamplingParams(max_tokens=10, temperature=1.0, seed=5 + i, ignore_eos=True))[0]
               for i in range(3)]
    assert [s.token_ids for s in out.samples] == [s.token_ids for s in singles]
    assert out.token_ids == singles[0].token_ids and len(out.outputs) == 3
    assert len({tuple(s.token_ids) for s in out.samples}) > 1  # seeds 5, 6, 7 draw differently
    greedy = llm.generate([prompt], SamplingParams(max_tokens=6, n=2))[0]
    assert greedy.samples[0].token_ids == greedy.samples[1].token_ids


def test_n_abort_frees_every_sample(llm, prompt):
    free = llm.block_manager.num_free_blocks
    llm.add_request(prompt, SamplingParams(max_tokens=50, n=2, ignore_eos=True), "grp")
    llm.step()
    assert llm.abort("grp") and not llm.has_unfinished()
    assert llm.block_manager.num_free_blocks == free


def test_top_k_minus_one_is_off(llm, prompt):
    a = llm.generate([prompt], SamplingParams(max_tokens=8, temperature=1.0, seed=3, top_k=-1))[0]
    b = llm.generate([prompt], SamplingParams(max_tokens=8, temperature=1.0, seed=3, top_k=0))[0]
    assert a.token_ids == b.token_ids


def test_stop_token_text_left_out_unless_included(llm, prompt):
    free = llm.generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True))[0]
    stop = free.token_ids[3]
    cut = free.token_ids[: free.token_ids.index(stop) + 1]
    o = llm.generate([prompt], SamplingParams(max_tokens=8, stop_token_ids=[stop]))[0]
    assert o.token_ids == cut and o.text == llm.tokenizer.decode(cut[:-1])
    inc = llm.generate([prompt], SamplingParams(max_tokens=8, stop_token_ids=[stop], include_stop_str_in_output=True))[0]
    assert inc.token_ids == cut and inc.text == llm.tokenizer.decode(cut)


def test_min_tokens_bans_stop_tokens_until_reached(llm, prompt):
    free = llm.generate([prompt], SamplingParams(max_tokens=12, ignore_eos=True))[0]
    stop = free.token_ids[0]  # greedy would stop at once
    o = llm.generate([prompt], SamplingParams(max_tokens=12, stop_token_ids=[stop], min_tokens=4, ignore_eos=True))[0]
    assert len(o.token_ids) >= 4 and stop not in o.token_ids[:4]
    assert o.finish_reason == "length" or o.token_ids[-1] == stop


def test_include_stop_str_in_output(llm):
    p = llm.tokenizer.encode("def add(a, b):\n    return")
    free = llm.generate([p], SamplingParams(max_tokens=16, ignore_eos=True))[0]
    stop = free.text[3:6]
    o = llm.generate([p], SamplingParams(max_tokens=16, ignore_eos=True, stop=[stop], include_stop_str_in_output=True))[0]
    assert o.finish_reason == "stop" and o.text == free.text[: free.text.find(stop) + len(stop)]


def test_eos_text_left_out_with_skip_special_tokens_false(tiny_checkpoint, prompt):
    """A model whose EOS is a token greedy decoding emits (we point EOS at it, as a checkpoint's
    generation_config would): the EOS id is kept, its text is not, special tokens shown or not."""
    llm = LLM(str(tiny_checkpoint("tiny")), block_size=4)
    free = llm.generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True))[0]
    eos = free.token_ids[2]
    llm.tokenizer.eos_token_ids = {eos}
    llm.scheduler.eos_token_ids = {eos}
    o = llm.generate([prompt], SamplingParams(max_tokens=8, skip_special_tokens=False))[0]
    cut = free.token_ids[: free.token_ids.index(eos) + 1]
    assert o.token_ids == cut and o.text == llm.tokenizer.decode(cut[:-1], False)


def test_logprobs_greedy_top_and_rescored_by_prefill(llm, prompt):
    """Each decode step's chosen log-prob equals the one a fresh prefill of the same prefix gives."""
    o = llm.generate([prompt], SamplingParams(max_tokens=5, ignore_eos=True, logprobs=3))[0]
    assert len(o.logprobs) == 5
    for k, e in enumerate(o.logprobs):
        assert e["token_id"] == o.token_ids[k] and len(e["top"]) == 3
        assert e["top"][0][0] == e["token_id"] and e["top"][0][1] == pytest.approx(e["logprob"])
        assert all(a[1] >= b[1] for a, b in zip(e["top"], e["top"][1:])) and e["logprob"] <= 0
        again = llm.generate([prompt + o.token_ids[:k]], SamplingParams(max_tokens=1, logprobs=0))[0].logprobs[0]
        assert again["token_id"] == e["token_id"] and math.isclose(again["logprob"], e["logprob"], abs_tol=1e-3)
    assert llm.generate([prompt], SamplingParams(max_tokens=3))[0].logprobs is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=0), "n must"), (dict(min_tokens=-1), "min_tokens"), (dict(max_tokens=2, min_tokens=3), "exceed"),
    (dict(logprobs=-1), "logprobs"), (dict(top_k=-2), "top_k"),
])
def test_invalid_vllm_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_async_scheduling_gives_the_plain_loops_min_tokens_and_logprobs(tiny_checkpoint, prompt):
    """Token for token: the overlapped loop must count the in-flight token for min_tokens (else it
    bans stop tokens one step too long) and attach each step's log-probs to the right token."""
    plain = LLM(str(tiny_checkpoint("tiny")), block_size=4, async_scheduling=False)
    # Half the vocabulary stops a request: whenever min_tokens allows, a stop is likely at once,
    # so banning one step too many changes the output length.
    stops = list(range(plain.tokenizer.vocab_size // 2))
    params = [SamplingParams(max_tokens=12, stop_token_ids=stops, min_tokens=m, logprobs=2) for m in (1, 2, 3, 4, 5)]
    want = plain.generate([prompt] * 5, params)
    got = LLM(str(tiny_checkpoint("tiny")), block_size=4, async_scheduling=True).generate([prompt] * 5, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert len({len(o.token_ids) for o in want}) > 1  # the min_tokens settings really differ
    for g, w in zip(got, want):
        assert [e["token_id"] for e in g.logprobs] == g.token_ids
        assert [e["logprob"] for e in g.logprobs] == pytest.approx([e["logprob"] for e in w.logprobs], abs=1e-5)
