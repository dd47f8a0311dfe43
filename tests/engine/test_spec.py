"""Speculative decoding through the real engine on tiny random checkpoints.

Greedy with either proposer == greedy without speculation, token for token, with prefix caching,
chunked prefill and preemption in play; draft = target copy accepts everything, a different
random draft little; sampled output follows the target's exact distribution; a draft with another
vocabulary is refused. (Plain greedy is itself checked against transformers in test_engine_exact.)
"""
from __future__ import annotations

import random

import pytest
import torch

from app.engine import LLM, SamplingParams

from .oracle import hf_model, shared_prefix_prompts

MAX_NEW = 16
ALWAYS = 1 << 20  # speculative_max_batch_size that keeps speculation on at any batch size


def repetitive_prompts(n: int = 5, seed: int = 0) -> list[list[int]]:
    """A shared prefix, then a per-prompt motif repeated, so prompt lookup finds matches."""
    rng = random.Random(seed)
    prefix = shared_prefix_prompts(n=1, prefix_len=21, seed=seed)[0][:21]
    out = []
    for i in range(n):
        motif = [rng.randrange(3, 500) for _ in range(3 + i)]
        out.append(prefix + motif * (2 + i % 3) + [rng.randrange(3, 500) for _ in range(i)])
    return out


@pytest.fixture(scope="module")
def target(tiny_checkpoint):
    return tiny_checkpoint("tiny")


@pytest.fixture(scope="module")
def other_draft(tiny_checkpoint):
    return tiny_checkpoint("tiny", seed=1)  # same shape and tokenizer, different random weights


SETTINGS = {
    "prefix_caching": dict(block_size=4),
    "chunked_prefill": dict(block_size=4, max_num_batched_tokens=7),
    # 2 layers x 2 KV heads x 16 dims x 4 bytes x 2 (K,V) = 512 B per token; 112 tokens of KV.
    "preemption": dict(block_size=4, kv_cache_memory_gb=112 * 512 / 2**30),
}


@pytest.fixture(scope="module")
def plain_runs(target):
    """Greedy outputs and engine step counts without speculation, per setting (the reference),
    computed on first use (the fast tier needs only one setting)."""
    prompts, runs = repetitive_prompts(), {}

    def run(name):
        if name not in runs:
            llm = LLM(str(target), **SETTINGS[name])
            runs[name] = ([o.token_ids for o in llm.generate(prompts, SamplingParams(max_tokens=MAX_NEW))],
                          llm.stats["steps"])
        return runs[name]

    return run


def _spec_kwargs(method, target, other_draft):
    if method == "ngram":
        return dict(speculative_method="ngram")
    draft = target if method == "draft_copy" else other_draft
    return dict(speculative_method="draft", speculative_draft_model=str(draft))


@pytest.mark.parametrize("method,setting", [
    pytest.param(m, s, marks=[] if s == "prefix_caching" else pytest.mark.slow)
    for m in ("ngram", "draft_copy") for s in SETTINGS] + [pytest.param("draft_other", "prefix_caching",
                                                                         marks=pytest.mark.slow)])
def test_greedy_speculation_equals_plain_greedy(target, other_draft, plain_runs, method, setting):
    prompts = repetitive_prompts()
    plain_outputs, plain_steps = plain_runs(setting)
    llm = LLM(str(target), **SETTINGS[setting], **_spec_kwargs(method, target, other_draft),
              speculative_max_batch_size=ALWAYS)
    outs = llm.generate(prompts, SamplingParams(max_tokens=MAX_NEW))
    for i, o in enumerate(outs):
        assert o.error is None, o.error
        assert o.token_ids == plain_outputs[i], f"prompt {i} diverged ({method}, {setting})"
    st = llm.stats
    assert st["spec_proposed_tokens"] > 0 and st["spec_steps"] > 0
    assert sum(o.metrics.get("spec_proposed", 0) for o in outs) == st["spec_proposed_tokens"]
    assert sum(o.metrics.get("spec_accepted", 0) for o in outs) == st["spec_accepted_tokens"]
    if method == "draft_copy":  # the draft is the target: every proposal is the target's argmax
        assert st["spec_acceptance_rate"] == 1.0
        # Several tokens per step: fewer engine steps than the same work without speculation.
        assert st["steps"] < plain_steps, (st["steps"], plain_steps)
    if method == "draft_other":
        assert st["spec_acceptance_rate"] < 0.5  # random draft vs random target
    if setting == "preemption":
        assert st["preemptions"] > 0
    if setting == "chunked_prefill":
        assert st["steps"] > MAX_NEW + 10


@pytest.mark.parametrize("method", ["ngram", pytest.param("draft_other", marks=pytest.mark.slow)])  # both reject
def test_prefix_cache_over_speculated_blocks_holds_the_right_kv(target, other_draft, method):
    """Blocks filled while proposals were verified (and rejected ones overwritten) are registered
    in the prefix cache; a later prompt that continues an output reuses them and must still
    generate exactly what a fresh engine without speculation generates."""
    prompts = repetitive_prompts(n=3, seed=3)
    kw = _spec_kwargs(method, target, other_draft)
    if method == "ngram":
        kw["speculative_ngram_min"] = 1  # propose at nearly every step
    llm = LLM(str(target), block_size=4, **kw, speculative_max_batch_size=ALWAYS)
    first = llm.generate(prompts, SamplingParams(max_tokens=MAX_NEW, ignore_eos=True))
    follow = [p + o.token_ids[:-1] for p, o in zip(prompts, first)]
    second = llm.generate(follow, SamplingParams(max_tokens=8, ignore_eos=True))
    fresh = LLM(str(target), block_size=4, enable_prefix_caching=False)
    ref = fresh.generate(follow, SamplingParams(max_tokens=8, ignore_eos=True))
    for p, s, r in zip(prompts, second, ref):
        assert s.num_cached_tokens > len(p)  # hits reach into blocks written during speculation
        assert s.token_ids == r.token_ids
    st = llm.stats
    assert 0 < st["spec_proposed_tokens"] and st["spec_accepted_tokens"] < st["spec_proposed_tokens"]  # rejections


def test_draft_with_another_vocabulary_is_refused(target, tiny_checkpoint):
    other = tiny_checkpoint("tiny", overrides={"vocab_size": 384})
    with pytest.raises(ValueError) as e:
        LLM(str(target), speculative_method="draft", speculative_draft_model=str(other))
    msg = str(e.value)
    assert str(target) in msg and str(other) in msg and "same family" in msg


def test_ngram_needs_no_draft_and_auto_policy_reports(target):
    """No draft model and no fixed threshold: at batch 1 the automatic policy tries speculation
    first (then alternates), so proposals are made and verified losslessly; after 3 pure-decode
    steps per arm it has measured bucket 1 both ways and reports a decision (0 or 1, by timing)."""
    prompt = repetitive_prompts(n=2)[1]
    sp = SamplingParams(max_tokens=24)
    llm = LLM(str(target), block_size=4, speculative_method="ngram", speculative_ngram_min=1)
    assert llm.stats["spec_auto_max_batch_size"] is None  # nothing measured yet
    out = llm.generate([prompt], sp)[0]
    assert out.token_ids == LLM(str(target), block_size=4).generate([prompt], sp)[0].token_ids
    st = llm.stats
    assert st["spec_method"] == "ngram" and st["spec_steps"] > 0 and st["spec_proposed_tokens"] > 0
    assert out.metrics["spec_proposed"] == st["spec_proposed_tokens"]
    assert st["spec_auto_max_batch_size"] in (0, 1)


# ----- sampling ---------------------------------------------------------------------------------
TEMP, TOP_K, N_SAMPLES = 1.0, 4, 240


def _chi2_critical(df: int, z: float = 3.090) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile; z = 3.090 is p = 0.001."""
    a = 2.0 / (9 * df)
    return df * (1 - a + z * a**0.5) ** 3


def _target_probs(model, prefixes: list[list[int]]) -> torch.Tensor:
    """Exact next-token distributions (temperature, then top-k) from transformers: (n, V)."""
    with torch.no_grad():
        logits = model(torch.tensor(prefixes)).logits[:, -1].float() / TEMP
    kth = logits.topk(TOP_K, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf")).softmax(-1)


def _chi2_of_conditionals(model, prompt, outputs, pos: int) -> tuple[float, int]:
    """Sum over observed prefixes (output tokens before `pos`) of the chi-square statistic of the
    token at `pos` against the exact conditional distribution; returns (statistic, dof)."""
    groups: dict[tuple, list[int]] = {}
    for o in outputs:
        groups.setdefault(tuple(o[:pos]), []).append(o[pos])
    keys = [k for k, v in groups.items() if len(v) >= 12]  # expected counts >= ~3 per token
    probs = _target_probs(model, [prompt + list(k) for k in keys])
    stat, dof = 0.0, 0
    for k, p in zip(keys, probs):
        support = (p > 0).nonzero().flatten()
        counts = torch.bincount(torch.tensor(groups[k]), minlength=p.numel()).float()
        assert counts[p == 0].sum() == 0, "a token outside the target's top-k was emitted"
        exp = p[support] * len(groups[k])
        stat += float(((counts[support] - exp) ** 2 / exp).sum())
        dof += len(support) - 1
    return stat, dof


@pytest.fixture(scope="module")
def self_prompt(target):
    """A prompt the model itself sampled (same temperature / top-k), so that prompt lookup with
    ngram_min=1 finds a match for most tokens the model emits (random weights rarely accept it)."""
    llm = LLM(str(target), block_size=4, seed=5, kv_cache_memory_gb=0.01)
    start = repetitive_prompts(n=1, seed=7)[0][:8]
    out = llm.generate([start], SamplingParams(max_tokens=60, temperature=TEMP, top_k=TOP_K, ignore_eos=True))
    return start + out[0].token_ids


@pytest.mark.parametrize("method", ["ngram"] + [pytest.param(m, marks=pytest.mark.slow)
                                               for m in ("off", "draft_copy", "draft_other")])
def test_sampled_tokens_follow_the_target_distribution(target, other_draft, self_prompt, method):
    """Temperature 1 + top-k 4 (an effective vocabulary of 4 tokens): the 2nd and 3rd generated
    tokens (the first ones speculation touches), grouped by the tokens before them, pass a
    chi-square goodness-of-fit test against transformers' exact conditional distributions at
    significance 0.001, fixed seeds. "off" checks the test itself on the plain sampler; the draft
    copy (q = p) exercises acceptance and bonus tokens, the other random draft and prompt lookup
    (q = point mass) mostly rejection and residual resampling; tests/engine/test_spec_units.py
    checks both branches on fixed distributions with many more draws."""
    prompt = self_prompt
    kw = {} if method == "off" else _spec_kwargs(method, target, other_draft)
    if method == "ngram":
        kw["speculative_ngram_min"] = 1  # match often: proposals at most steps
    if kw:
        kw["speculative_max_batch_size"] = ALWAYS
    llm = LLM(str(target), block_size=4, seed=11, max_num_seqs=N_SAMPLES, kv_cache_memory_gb=0.05, **kw)
    outs = llm.generate([prompt] * N_SAMPLES,
                        SamplingParams(max_tokens=3, temperature=TEMP, top_k=TOP_K, ignore_eos=True))
    toks = [o.token_ids for o in outs]
    assert all(len(t) == 3 for t in toks)
    model = hf_model(str(target))
    for pos in (1, 2):
        stat, dof = _chi2_of_conditionals(model, prompt, toks, pos)
        assert dof >= 10 and stat < _chi2_critical(dof), (pos, stat, dof)
    if method != "off":
        st = llm.stats
        proposed, accepted = st["spec_proposed_tokens"], st["spec_accepted_tokens"]
        assert proposed > N_SAMPLES / 2, st
        if method == "draft_copy":
            assert accepted >= 0.99 * proposed  # p / q == 1 up to rounding
        else:
            assert accepted < 0.5 * proposed
