"""Scheduler bookkeeping under async scheduling, with a fake model (no torch): step N+1 is
scheduled before step N's tokens are applied, placeholders stand for the tokens in flight, and
the outcome equals the plain loop's, token for token, with EOS, length limits and preemption."""
from __future__ import annotations

from app.engine.block_manager import BlockManager
from app.engine.sampling_params import SamplingParams
from app.engine.scheduler import Scheduler
from app.engine.sequence import Sequence

EOS = 0


def make(num_blocks=64, block_size=4, max_seqs=8, budget=64, max_len=1000):
    bm = BlockManager(num_blocks, block_size)
    return bm, Scheduler(bm, max_seqs, budget, max_len, eos_token_ids={EOS})


def next_token(seq) -> int:
    """A deterministic 'model': the next token is a function of the whole prefix; EOS sometimes."""
    h = sum((i + 1) * t for i, t in enumerate(seq.token_ids)) % 23
    return EOS if h == 5 else 3 + h


def sample(out) -> dict[int, list[int]]:
    # Called when the step's tokens land: by then the sequence holds exactly the tokens that step
    # read (the previous step's token was applied first), so the fake is exact in both loops.
    return {s.seq.seq_id: [next_token(s.seq)] for s in out.scheduled if s.samples}


def run_plain(sched) -> None:
    for _ in range(500):
        if not sched.has_unfinished():
            return
        out = sched.schedule()
        sched.update(out, sample(out))
    raise AssertionError("scheduler made no progress")


def run_async(sched, check=None) -> None:
    prev = None
    for _ in range(500):
        if not (sched.has_unfinished() or prev is not None):
            return
        out = sched.schedule()
        if not out.is_empty:
            if check:
                check(out, prev)
            sched.launched(out)
        if prev is not None:
            sched.update(prev, sample(prev))
        prev = None if out.is_empty else out
    raise AssertionError("scheduler made no progress")


def workload(n=6, max_tokens=9):
    return [Sequence([1 + i, 2, 3, 4 + i, 5], SamplingParams(max_tokens=max_tokens + i % 3)) for i in range(n)]


def test_placeholder_is_scheduled_as_the_next_decode_token():
    bm, sched = make()
    a = Sequence([1, 2, 3, 4, 5], SamplingParams(max_tokens=5, ignore_eos=True))
    sched.add(a)
    out1 = sched.schedule()
    sched.launched(out1)
    assert (a.num_computed_tokens, a.num_tokens, a.num_placeholders) == (5, 5, 1)
    out2 = sched.schedule()  # before out1's token is known
    s, = out2.scheduled
    assert s.num_new_tokens == 1 and s.samples
    sched.launched(out2)
    assert a.num_placeholders == 2 and a.num_computed_tokens == 6
    sched.update(out1, {a.seq_id: [7]})
    assert a.token_ids[-1] == 7 and a.num_placeholders == 1


def test_a_token_that_certainly_ends_the_request_is_not_computed_past():
    bm, sched = make(max_len=8)
    a = Sequence([1, 2, 3, 4], SamplingParams(max_tokens=2, ignore_eos=True))
    b = Sequence([5, 6, 7, 8, 9, 10], SamplingParams(max_tokens=50, ignore_eos=True))  # hits max_len 8
    sched.add(a)
    sched.add(b)
    out1 = sched.schedule()
    sched.launched(out1)
    out2 = sched.schedule()
    sched.launched(out2)
    sched.update(out1, {a.seq_id: [11], b.seq_id: [12]})
    # a's second (last) token and b's 8th token are in flight: neither is scheduled again.
    assert sched.schedule().is_empty
    assert sched.update(out2, {a.seq_id: [13], b.seq_id: [14]}) == [a, b]
    assert a.output_token_ids == [11, 13] and b.output_token_ids == [12, 14]
    assert sched.stats.discarded_tokens == 0


def test_token_of_the_step_after_eos_is_dropped():
    bm, sched = make()
    a = Sequence([1, 2, 3], SamplingParams(max_tokens=10))
    sched.add(a)
    out1 = sched.schedule()
    sched.launched(out1)
    out2 = sched.schedule()  # scheduled before anyone knows out1 samples EOS
    sched.launched(out2)
    assert sched.update(out1, {a.seq_id: [EOS]}) == [a]
    assert a.is_finished and bm.num_free_blocks == bm.num_blocks
    assert sched.update(out2, {a.seq_id: [42]}) == []
    assert a.output_token_ids == [EOS] and sched.stats.discarded_tokens == 1


def test_same_outputs_as_the_plain_loop_with_eos_and_chunked_prefill():
    seqs_plain, seqs_async = workload(), workload()
    for seqs, run in ((seqs_plain, run_plain), (seqs_async, run_async)):
        bm, sched = make(budget=7)
        for s in seqs:
            sched.add(s)
        run(sched)
        assert bm.num_free_blocks == bm.num_blocks
    assert [s.output_token_ids for s in seqs_async] == [s.output_token_ids for s in seqs_plain]
    assert [s.finish_reason for s in seqs_async] == [s.finish_reason for s in seqs_plain]
    assert "stop" in {s.finish_reason for s in seqs_plain}  # EOS really ended some early


def test_preempting_a_sequence_whose_token_is_in_flight():
    seqs_plain, seqs_async = workload(max_tokens=12), workload(max_tokens=12)
    preempted_in_flight = []

    def check(out, prev):
        for victim in out.preempted:
            if prev is not None and any(s.seq is victim for s in prev.scheduled):
                assert victim.num_placeholders == 1  # its token still comes, and is kept
                preempted_in_flight.append(victim)
        for s in out.scheduled:
            assert s.seq.num_placeholders <= 1

    for seqs, run in ((seqs_plain, run_plain), (seqs_async, lambda sc: run_async(sc, check))):
        bm, sched = make(num_blocks=8, block_size=2, budget=100, max_len=16)  # the engine caps it so
        for s in seqs:
            sched.add(s)
        run(sched)
        assert sched.stats.preemptions > 0 and bm.num_free_blocks == bm.num_blocks
    assert preempted_in_flight
    assert [s.output_token_ids for s in seqs_async] == [s.output_token_ids for s in seqs_plain]
    assert all(s.num_placeholders == 0 or s.is_finished for s in seqs_async)
