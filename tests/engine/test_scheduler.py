"""Scheduler bookkeeping with a fake model (no torch): exact token counts per step, first-wave
prefix sharing, chunked prefill, preemption and requeueing."""
from __future__ import annotations

from app.engine.block_manager import BlockManager
from app.engine.sampling_params import SamplingParams
from app.engine.scheduler import Scheduler
from app.engine.sequence import Sequence, SequenceStatus


def make(num_blocks=64, block_size=4, max_seqs=8, budget=64, max_len=1000):
    bm = BlockManager(num_blocks, block_size)
    return bm, Scheduler(bm, max_seqs, budget, max_len, eos_token_ids={0})


def seq(tokens, max_tokens=3):
    return Sequence(list(tokens), SamplingParams(max_tokens=max_tokens, ignore_eos=True))


def fake_step(sched, token=7):
    out = sched.schedule()
    sampled = {s.seq.seq_id: [token] for s in out.scheduled if s.samples}
    sched.update(out, sampled)
    return out


def test_first_wave_computes_shared_prefix_once():
    bm, sched = make(budget=1000)
    system = list(range(1, 13))  # 12 tokens = 3 full blocks of 4
    seqs = [seq(system + [100 + i, 200 + i]) for i in range(5)]
    for s in seqs:
        sched.add(s)
    out = sched.schedule()
    counts = [x.num_new_tokens for x in out.scheduled]
    assert counts == [14, 2, 2, 2, 2]  # the first computes everything, the rest only their tails
    assert [s.num_cached_tokens for s in seqs] == [0, 12, 12, 12, 12]
    assert all(s.block_table[:3] == seqs[0].block_table[:3] for s in seqs)
    assert [bm.blocks[b].ref_count for b in seqs[0].block_table[:3]] == [5, 5, 5]
    assert sched.stats.prefix_cache_hit_tokens == 48


def test_last_prompt_token_never_served_from_cache():
    bm, sched = make(budget=1000)
    a, b = seq(range(1, 9)), seq(range(1, 9))  # 8 tokens: exactly 2 full blocks
    sched.add(a)
    sched.add(b)
    out = sched.schedule()
    assert [x.num_new_tokens for x in out.scheduled] == [8, 4]
    assert b.num_cached_tokens == 4


def test_decode_and_chunked_prefill_share_a_step():
    bm, sched = make(budget=6)
    a = seq(range(1, 5), max_tokens=5)
    sched.add(a)
    assert [x.num_new_tokens for x in fake_step(sched).scheduled] == [4]
    b = seq(range(50, 61))  # 11 tokens, chunked over the remaining budget
    sched.add(b)
    out = fake_step(sched)
    assert [(x.seq is a, x.num_new_tokens) for x in out.scheduled] == [(True, 1), (False, 5)]
    assert not out.scheduled[1].samples
    out = fake_step(sched)
    assert [x.num_new_tokens for x in out.scheduled] == [1, 5]
    out = fake_step(sched)
    assert [x.num_new_tokens for x in out.scheduled] == [1, 1] and out.scheduled[1].samples
    assert b.num_output_tokens == 1


def test_preemption_requeues_newest_and_everything_finishes():
    bm, sched = make(num_blocks=6, block_size=2, budget=100)
    seqs = [seq([1 + i, 2, 3, 4, 5], max_tokens=4) for i in range(3)]
    for s in seqs:
        sched.add(s)
    steps = 0
    while sched.has_unfinished():
        fake_step(sched)
        steps += 1
        assert steps < 100, "scheduler made no progress"
        used = sum(b.ref_count > 0 for b in bm.blocks)
        assert used <= 6
    assert sched.stats.preemptions > 0
    assert all(s.status == SequenceStatus.FINISHED and s.num_output_tokens == 4 for s in seqs)
    assert all(b.ref_count == 0 for b in bm.blocks)


def test_max_num_seqs_caps_running():
    bm, sched = make(max_seqs=2, budget=100)
    for i in range(4):
        sched.add(seq([i + 1, 9, 9]))
    out = sched.schedule()
    assert len(out.scheduled) == 2 and len(sched.waiting) == 2


def test_finish_frees_blocks_and_stop_reasons():
    bm, sched = make()
    s = Sequence([1, 2, 3], SamplingParams(max_tokens=10, stop_token_ids=[42]))
    sched.add(s)
    fake_step(sched, token=5)
    fake_step(sched, token=42)
    assert s.finish_reason == "stop" and s.output_token_ids == [5, 42]
    assert bm.num_free_blocks == bm.num_blocks
    e = Sequence([1, 2, 3], SamplingParams(max_tokens=10))
    sched.add(e)
    fake_step(sched, token=0)  # EOS
    assert e.finish_reason == "stop"


def test_output_marks_pure_decode_and_speculative_steps():
    """SchedulerOutput says what kind of step it is (speculation's throughput policy reads it)."""
    _, sched = make(budget=6, max_seqs=2)
    a, b = seq(range(1, 5), max_tokens=10), seq(range(11, 17), max_tokens=10)
    sched.add(a)
    sched.add(b)
    out = fake_step(sched)  # a's whole prompt (4) + b's first chunk (2): prefill
    assert not out.is_pure_decode and not out.is_speculative
    out = fake_step(sched)  # a decodes (1), b's last chunk (4) completes its prefill: still mixed
    assert [x.num_new_tokens for x in out.scheduled] == [1, 4] and not out.is_pure_decode
    out = fake_step(sched)  # both decode
    assert out.is_pure_decode and not out.is_speculative and out.num_spec_tokens == 0
    a.spec_token_ids = [5, 6]  # two proposals to verify: 3 rows, still pure decode
    out = sched.schedule()
    assert out.is_pure_decode and out.is_speculative and out.num_spec_tokens == 2
    sched.update(out, {a.seq_id: [5, 9], b.seq_id: [7]})
