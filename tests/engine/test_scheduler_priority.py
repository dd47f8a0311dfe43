"""Request priority: waiting sequences admitted lowest value first, FCFS among equals, the lowest
priority preempted first, and greedy outputs the same whatever the priorities."""
from __future__ import annotations

import pytest

from app.engine import LLM, SamplingParams
from app.engine.sequence import SequenceStatus

from .oracle import shared_prefix_prompts
from .test_scheduler import fake_step, make, seq


def admission_order(sched, seqs):
    """Run to the end; the order in which `seqs` were first scheduled."""
    order, steps = [], 0
    while sched.has_unfinished():
        for s in fake_step(sched).scheduled:
            if s.seq not in order:
                order.append(s.seq)
        steps += 1
        assert steps < 200, "scheduler made no progress"
    return [seqs.index(s) for s in order]


def test_waiting_queue_served_in_priority_order_fcfs_among_equals():
    bm, sched = make(max_seqs=1, budget=100)
    prios = [3, 1, 2, 1, 0, 1]
    seqs = [seq([10 + i, 2, 3], max_tokens=1) for i in range(len(prios))]
    for s, p in zip(seqs, prios):
        s.priority = p
        sched.add(s)
    # priority 0; then the three 1s in arrival order (1, 3, 5); then 2; then 3
    assert admission_order(sched, seqs) == [4, 1, 3, 5, 2, 0]


def test_equal_priorities_are_first_come_first_served():
    bm, sched = make(max_seqs=2, budget=100)
    seqs = [seq([20 + i, 2, 3], max_tokens=2) for i in range(5)]
    for s in seqs:
        s.priority = 7
        sched.add(s)
    assert admission_order(sched, seqs) == [0, 1, 2, 3, 4]


def test_late_high_priority_request_goes_ahead_of_earlier_waiting_ones():
    bm, sched = make(max_seqs=1, budget=100)
    early = [seq([30 + i, 2, 3], max_tokens=2) for i in range(3)]
    for s in early:
        sched.add(s)
    fake_step(sched)  # early[0] is running now; early[1:] wait
    urgent = seq([40, 2, 3], max_tokens=2)
    urgent.priority = -1
    sched.add(urgent)
    assert admission_order(sched, early + [urgent]) == [0, 3, 1, 2]  # early[0] was already running


def run_until_preemption(prio_low, prio_high):
    """Two sequences fill a 5-block pool; the one admitted second must take a block from the other."""
    bm, sched = make(num_blocks=5, block_size=2, budget=100)
    low, high = seq([1, 2, 3], max_tokens=6), seq([4, 5, 6], max_tokens=6)
    low.priority, high.priority = prio_low, prio_high
    sched.add(low)
    fake_step(sched)
    sched.add(high)
    victims, steps = [], 0
    while sched.has_unfinished():
        victims += fake_step(sched).preempted
        steps += 1
        assert steps < 200
    assert all(s.status == SequenceStatus.FINISHED and s.num_output_tokens == 6 for s in (low, high))
    assert all(b.ref_count == 0 for b in bm.blocks)
    return victims, low, high


def test_preemption_takes_the_lowest_priority_even_if_admitted_first():
    victims, low, high = run_until_preemption(prio_low=5, prio_high=0)
    assert victims and victims[0] is low and high.num_preemptions == 0


def test_preemption_among_equal_priorities_takes_the_newest():
    victims, low, high = run_until_preemption(prio_low=0, prio_high=0)
    assert victims and victims[0] is high and low.num_preemptions == 0


def test_add_request_rejects_a_non_integer_priority(tiny_checkpoint):
    llm = LLM(str(tiny_checkpoint("tiny")), block_size=4)
    with pytest.raises(TypeError, match="priority"):
        llm.add_request([1, 2, 3], SamplingParams(max_tokens=1), priority=0.5)


def test_greedy_outputs_do_not_depend_on_priority(tiny_checkpoint):
    llm = LLM(str(tiny_checkpoint("tiny")), block_size=4, max_num_seqs=2)
    prompts = shared_prefix_prompts(n=6, seed=11)
    sp = SamplingParams(max_tokens=6, ignore_eos=True)  # all the same length: finishing order = admission order
    plain = llm.generate(prompts, sp)
    prios = [5, 0, 3, 0, -2, 1]
    ids = [llm.add_request(p, sp, priority=pr) for p, pr in zip(prompts, prios)]
    finished = []
    while llm.has_unfinished():
        finished += llm.step()
    by_id = {o.request_id: o for o in finished}
    assert [by_id[i].token_ids for i in ids] == [o.token_ids for o in plain]
    # Two at a time, in priority order: (-2, 0), (0, 1), (3, 5); FCFS ran them as (0, 1), (2, 3), (4, 5).
    order = [ids.index(o.request_id) for o in finished]
    assert set(order[:2]) == {4, 1} and set(order[2:4]) == {3, 5} and set(order[4:]) == {2, 0}
    assert llm.generate(prompts, sp, priorities=prios)[0].token_ids == plain[0].token_ids
