"""Speculative decoding pieces without a model: prompt lookup vs its reference scan, greedy
acceptance, the accept/reject rule's output distribution, and the on/off + k policy."""
from __future__ import annotations

import random

import pytest
import torch

from app.engine.spec.ngram import NgramProposer, ngram_lookup_reference
from app.engine.spec.policy import MIN_SAMPLES, SpecPolicy, bucket_of
from app.engine.spec.verify import greedy_accept, rejection_sample


@pytest.mark.parametrize("n_max,n_min", [(4, 2), (3, 1), (2, 2)])
def test_ngram_index_matches_reference_scan_as_tokens_arrive(n_max, n_min):
    rng = random.Random(n_max * 10 + n_min)
    for trial in range(20):
        base = [rng.randrange(6) for _ in range(rng.randrange(1, 12))]
        toks = base * 3 + [rng.randrange(6) for _ in range(5)]  # repetition makes matches likely
        prop = NgramProposer(n_max, n_min)
        hits = 0
        for L in range(1, len(toks) + 1, rng.choice([1, 2, 3])):
            k = rng.randrange(1, 6)
            got = prop.lookup(trial, toks[:L], k)
            assert got == ngram_lookup_reference(toks[:L], n_max, n_min, k), (toks[:L], k)
            hits += bool(got)
        assert hits > 0 or len(base) == 1 and n_min > 1


def test_ngram_proposes_the_continuation_of_the_latest_match():
    toks = [1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3]
    assert ngram_lookup_reference(toks, 3, 2, 2) == [7, 8]
    assert NgramProposer(3, 2).lookup(0, toks, 2) == [7, 8]
    assert NgramProposer(3, 2).lookup(0, [4, 5, 6], 3) == []


def test_greedy_accept_prefix_plus_target_token():
    logits = torch.full((4, 10), -1.0)
    for r, t in enumerate([3, 5, 7, 9]):
        logits[r, t] = 1.0
    assert greedy_accept(logits, [3, 5, 7]) == [3, 5, 7, 9]  # all accepted + bonus
    assert greedy_accept(logits, [3, 6, 7]) == [3, 5]  # stops at the first mismatch
    assert greedy_accept(logits, [0, 5, 7]) == [3]
    assert greedy_accept(logits[:1], []) == [3]


CHI2_DF5_P001 = 20.515  # chi-square critical value, 5 degrees of freedom, p = 0.001


def _tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.5 * float((a - b).abs().sum())


@pytest.mark.parametrize("point_mass", [False, True])
def test_rejection_sampling_follows_the_target_distribution(point_mass):
    """Tokens emitted at each position follow p whatever q proposed. Tolerance: a chi-square
    goodness-of-fit test per position at significance 0.001 (5 degrees of freedom: statistic
    < 20.52), fixed seed; a rule that accepted proposals blindly would be off by TV(p, q) >= 0.3."""
    V, k, N = 6, 2, 6000
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([[0.40, 0.25, 0.15, 0.10, 0.07, 0.03],
                      [0.05, 0.05, 0.10, 0.20, 0.25, 0.35],
                      [0.30, 0.30, 0.10, 0.10, 0.10, 0.10]])
    q = torch.tensor([[0.05, 0.05, 0.10, 0.10, 0.30, 0.40],
                      [0.50, 0.20, 0.10, 0.10, 0.05, 0.05]])
    counts = torch.zeros(k + 1, V)
    seen = torch.zeros(k + 1)
    accepted = 0
    for _ in range(N):
        if point_mass:
            props = [0, 5]  # prompt lookup: fixed proposals, q = point mass
            out = rejection_sample(p, props, None, g)
        else:
            props = [int(torch.multinomial(q[j], 1, generator=g)) for j in range(k)]
            out = rejection_sample(p, props, q, g)
        assert 1 <= len(out) <= k + 1 and out[:-1] == props[: len(out) - 1]
        accepted += len(out) - 1
        # Position j's emitted token is a sample of p[j] given the earlier proposals were accepted
        # (this p does not depend on the prefix, so the conditional equals p[j]).
        for j, t in enumerate(out):
            counts[j, t] += 1
            seen[j] += 1
    for j in range(k + 1):
        expected = seen[j] * p[j]
        chi2 = float(((counts[j] - expected) ** 2 / expected).sum())
        assert seen[j] > 500 and chi2 < CHI2_DF5_P001, (j, counts[j] / seen[j], p[j], chi2)
    assert 0 < accepted < N * k
    if not point_mass:
        assert _tv(q[0], p[0]) > 0.3  # the test would notice proposals accepted blindly


def test_policy_fixed_threshold_and_k_adaptation():
    pol = SpecPolicy(k_max=5, max_batch_size=4)
    assert pol.should_speculate(4) and not pol.should_speculate(5)
    for _ in range(30):
        pol.observe_verify(1, 5, 5)  # always accepted
        pol.observe_verify(2, 5, 0)  # always rejected
    assert pol.num_tokens(1) == 5 and pol.num_tokens(2) == 1
    assert pol.acceptance(1) > 0.8 > 0.3 > pol.acceptance(2)
    pol.forget({1})
    assert 2 not in pol.seq_acc and 1 in pol.seq_acc


def test_auto_policy_follows_measured_throughput_per_batch_bucket():
    pol = SpecPolicy(k_max=4, max_batch_size=None)
    assert bucket_of(1) == 1 and bucket_of(3) == 2 and bucket_of(4) == 3 and bucket_of(64) == 7
    # Batch 1 wins with speculation, batch 2-3 loses; larger batches are then never explored.
    for n, on_rate, off_rate, explores in [(1, 300.0, 100.0, True), (2, 150.0, 200.0, True),
                                           (4, 900.0, 100.0, False), (64, 900.0, 1000.0, False)]:
        decisions = []
        for _ in range(200):
            on = pol.should_speculate(n)
            decisions.append(on)
            tokens = 10.0
            pol.observe_step(n, on, tokens, tokens / (on_rate if on else off_rate))
        tail = decisions[2 * MIN_SAMPLES:]
        if not explores:  # the next smaller bucket showed speculation does not pay
            assert not any(decisions)
            continue
        # Explores both arms first, then runs the faster one nearly always.
        assert set(decisions[: 2 * MIN_SAMPLES]) == {True, False}
        frac_on = sum(tail) / len(tail)
        assert frac_on > 0.9 if on_rate > off_rate else frac_on < 0.1
    assert pol.auto_max_batch_size() == 1


def test_speculation_reads_the_engine_only_through_its_context():
    """app/engine/spec sees the engine through SpecContext and SchedulerOutput: no LLM object, no
    private fields, no scheduler counters (which is how it used to guess pure-decode steps)."""
    import pathlib
    import re

    import app.engine.spec as spec

    for f in pathlib.Path(spec.__file__).parent.glob("*.py"):
        src = f.read_text()
        for pat in (r"\bllm\b", r"\._seq_generators\b", r"\._generator\b", r"\.stats\.computed_tokens"):
            assert not re.search(pat, src), f"{f.name} reaches into the engine: {pat}"
