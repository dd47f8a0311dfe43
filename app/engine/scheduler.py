"""Continuous batching on a token budget, with chunked prefill, prefix sharing and preemption.

Pure Python bookkeeping (no torch). Each `schedule()` call picks, for one model step, how many
new tokens each sequence computes: running sequences first (decode = 1 token, or the rest of a
chunked prefill, plus any speculative proposals), then waiting ones in arrival order while the
token budget, the sequence cap and the KV blocks allow. When a running sequence needs a block
and none is free, the newest running sequence is preempted (its KV dropped, to be recomputed)
and requeued at the front. `update()` applies the sampled tokens after the model ran.

Requests may carry a priority (lower first, waiting_queue.py): the waiting queue is then served
in priority order, running sequences are served in it, and the victim of a preemption is the
lowest priority, newest admitted one. With one priority for all, all of it is the FCFS above.

Async scheduling (EngineConfig.async_scheduling) schedules step N+1 while step N still runs:
`launched(out)` is called as soon as step N's forward is queued and counts its KV as computed;
each sequence that samples in it holds a placeholder (`seq.num_placeholders`) for the token whose
value is still on the device. Step N+1 computes that placeholder (the model runner reads its value
on the device), and `update(out_N, ...)` replaces it with the real token when it lands. A sequence
that step N finishes (EOS, stop) was already scheduled in step N+1: that step's token for it is
dropped, because update() skips finished sequences.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .block_manager import BlockManager
from .sequence import Sequence, SequenceStatus
from .waiting_queue import RunningOrder, WaitingQueue


@dataclass
class ScheduledSeq:
    seq: Sequence
    num_new_tokens: int  # tokens computed this step, starting at seq.num_computed_tokens
    num_spec_tokens: int = 0  # of those, trailing speculative proposals to verify
    # Whether this step yields the sequence's next token (its prefill is complete). Fixed when
    # scheduled: launched() moves num_computed_tokens on before the step's tokens are applied.
    samples: bool = field(init=False)

    def __post_init__(self) -> None:
        s = self.seq
        known = s.num_tokens + getattr(s, "num_placeholders", 0)  # draft sequences have none
        self.samples = s.num_computed_tokens + self.num_new_tokens - self.num_spec_tokens >= known


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    num_batched_tokens: int = 0
    new_blocks: list[int] = field(default_factory=list)  # blocks registered (keyed) this step
    preempted: list[Sequence] = field(default_factory=list)
    is_launched: bool = False  # launched() was applied

    @property
    def is_empty(self) -> bool:
        return not self.scheduled

    # What kind of step this is (as vLLM's SchedulerOutput carries its scheduled spec tokens):
    # read by speculation, which must not guess it from the scheduler's counters.
    @property
    def num_spec_tokens(self) -> int:
        """Speculative proposals scored in this step (the scheduler may have dropped some)."""
        return sum(s.num_spec_tokens for s in self.scheduled)

    @property
    def is_speculative(self) -> bool:
        return self.num_spec_tokens > 0

    @property
    def is_pure_decode(self) -> bool:
        """Every sequence computes only its next token (plus its proposals): no prefill chunk."""
        return bool(self.scheduled) and all(s.samples and s.num_new_tokens == 1 + s.num_spec_tokens
                                            for s in self.scheduled)


@dataclass
class SchedulerStats:
    steps: int = 0
    preemptions: int = 0
    prompt_tokens: int = 0
    prefix_cache_hit_tokens: int = 0
    computed_tokens: int = 0
    max_seqs_in_step: int = 0
    seqs_in_steps: int = 0
    # Async scheduling: tokens sampled for sequences that had finished (or were aborted) while
    # the step was in flight, and dropped.
    discarded_tokens: int = 0


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        eos_token_ids: set[int] | frozenset[int] = frozenset(),
    ):
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.eos_token_ids = set(eos_token_ids)
        self.waiting = WaitingQueue()  # (priority, arrival) order
        self.running: list[Sequence] = []  # (priority, admission) order: preemption takes the tail
        self._running_order = RunningOrder()
        self.stats = SchedulerStats()

    # ----- intake and exit -----------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        self.waiting.push(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Finish (or abort) a sequence wherever it is and free its blocks."""
        if seq.is_finished:
            return
        if seq.status == SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.bm.release(seq.block_table)
        seq.block_table = []
        seq.spec_token_ids = []
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        seq.metrics.finished_time = time.perf_counter()

    # ----- one step ------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        scheduled: list[ScheduledSeq] = []
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n_spec = len(seq.spec_token_ids)
            known = seq.num_tokens + seq.num_placeholders
            n = known + n_spec - seq.num_computed_tokens
            if n > budget:  # no room for every proposal: verify none this step
                seq.spec_token_ids, n_spec = [], 0
                n = min(known - seq.num_computed_tokens, budget)
            if n <= 0 or self._ends_with_placeholder(seq):
                i += 1
                continue
            # Victims are taken from the tail of `running`, i.e. never one scheduled already.
            if not self._grow(seq, seq.num_computed_tokens + n, out):
                continue  # seq itself was preempted (it was the last running one)
            scheduled.append(ScheduledSeq(seq, n, n_spec))
            self._register_full_blocks(seq, seq.num_computed_tokens + n, out)
            budget -= n
            i += 1
        if not out.preempted:  # no admissions while memory is short
            budget = self._admit(budget, scheduled, out)
        out.scheduled = scheduled
        out.num_batched_tokens = self.max_num_batched_tokens - budget
        if scheduled:
            st = self.stats
            st.steps += 1
            st.computed_tokens += out.num_batched_tokens
            st.max_seqs_in_step = max(st.max_seqs_in_step, len(scheduled))
            st.seqs_in_steps += len(scheduled)
        return out

    def _grow(self, seq: Sequence, num_tokens: int, out: SchedulerOutput) -> bool:
        """Give `seq` blocks for `num_tokens` tokens, preempting the newest running sequences
        if needed. Returns False when `seq` itself had to be preempted."""
        need = self.bm.blocks_needed(num_tokens) - len(seq.block_table)
        while need > 0:
            new = self.bm.allocate(need)
            if new is not None:
                seq.block_table.extend(new)
                return True
            victim = self.running[-1]
            self._preempt(victim, out)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self.bm.release(seq.block_table)
        seq.block_table, seq.block_keys, seq.spec_token_ids = [], [], []
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.stats.preemptions += 1
        self.waiting.push(seq)  # back ahead of every later arrival of its priority
        out.preempted.append(seq)

    def _ends_with_placeholder(self, seq: Sequence) -> bool:
        """Whether the token in flight certainly ends `seq` (max_tokens or the model length):
        then computing one more step for it would be wasted, or past the model's length."""
        if not seq.num_placeholders:
            return False
        return (seq.num_output_tokens + seq.num_placeholders >= seq.params.max_tokens
                or seq.num_tokens + seq.num_placeholders >= self.max_model_len)

    def _admit(self, budget: int, scheduled: list, out: SchedulerOutput) -> int:
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting.peek()
            # A sequence preempted while its token was in flight is admitted only after it
            # landed: the schedule that preempts admits nobody, and update() runs before the next.
            assert not seq.num_placeholders, "admitting a sequence whose sampled token is in flight"
            # Never reuse the block holding the last prompt token: its logits must be computed,
            # and a shared block is never written twice.
            hits = self.bm.match_prefix(seq.token_ids, seq.num_tokens - 1)
            self.bm.take(hits)
            computed = len(hits) * self.bm.block_size
            n = min(seq.num_tokens - computed, budget)
            need = self.bm.blocks_needed(computed + n) - len(hits)
            new = self.bm.allocate(need)
            if new is None:
                self.bm.release(hits)
                break
            self.waiting.pop()
            seq.block_table = hits + new
            seq.block_keys = self.bm.prefix_keys(seq.token_ids, len(hits))
            seq.num_computed_tokens = computed
            seq.status = SequenceStatus.RUNNING
            if seq.metrics.first_scheduled_time is None:
                seq.metrics.first_scheduled_time = time.perf_counter()
                seq.num_cached_tokens = computed
                self.stats.prompt_tokens += seq.num_prompt_tokens
                self.stats.prefix_cache_hit_tokens += computed
            self._running_order.insert(self.running, seq)  # after the running loop: no index moves under it
            scheduled.append(ScheduledSeq(seq, n))
            self._register_full_blocks(seq, computed + n, out)
            budget -= n
        return budget

    def _register_full_blocks(self, seq: Sequence, upto: int, out: SchedulerOutput) -> None:
        """Key every full block whose tokens are all known (not speculative) and whose KV is
        in the cache by the end of this step."""
        bs = self.bm.block_size
        upto = min(upto, seq.num_tokens)
        for b in range(len(seq.block_keys), upto // bs):
            toks = tuple(seq.token_ids[b * bs : (b + 1) * bs])
            parent = seq.block_keys[-1] if seq.block_keys else None
            key = self.bm.register(seq.block_table[b], parent, toks)
            seq.block_keys.append(key if key is not None else hash((parent, toks)))
            if key is not None:
                out.new_blocks.append(seq.block_table[b])

    # ----- after the model ran -------------------------------------------------------------
    def launched(self, out: SchedulerOutput) -> None:
        """The step's forward is queued on the device: count its KV as computed (a later step,
        queued after it, reads it) and give each sampling sequence a placeholder for the token
        it is about to get. update() calls this itself when the step was not launched ahead."""
        assert not out.is_launched, "step launched twice"
        out.is_launched = True
        self.bm.mark_computed(out.new_blocks)
        for s in out.scheduled:
            seq = s.seq
            if seq.is_finished:
                continue
            seq.num_computed_tokens += s.num_new_tokens - s.num_spec_tokens
            if s.samples:
                seq.num_placeholders += 1

    def update(self, out: SchedulerOutput, sampled: dict[int, list[int]]) -> list[Sequence]:
        """Append sampled tokens (resolving the placeholders launched() set) and apply
        token-level stops.

        `sampled[seq_id]` lists the tokens accepted this step (1 for plain decode, more with
        speculative decoding), only for sequences whose step samples. A sequence preempted
        while the step was in flight still gets its token (it is valid; its KV is recomputed on
        readmission). Returns the sequences that finished in this step.
        """
        if not out.is_launched:
            self.launched(out)
        now = time.perf_counter()
        finished = []
        for s in out.scheduled:
            seq = s.seq
            if seq.is_finished:
                self.stats.discarded_tokens += len(sampled.get(seq.seq_id, ()))
                continue
            if s.samples:
                seq.num_placeholders -= 1
                assert seq.num_placeholders >= 0
            seq.spec_token_ids = []
            toks = sampled.get(seq.seq_id)
            if not toks:
                continue
            if seq.metrics.first_token_time is None:
                seq.metrics.first_token_time = now
            for j, t in enumerate(toks):
                seq.append_token(t)
                # Accepted proposals were computed this step; the last token of toks was not.
                if j < len(toks) - 1:
                    seq.num_computed_tokens += 1
                reason = self.stop_reason(seq, t)
                if reason:
                    self.finish(seq, reason)
                    finished.append(seq)
                    break
        return finished

    def stop_reason(self, seq: Sequence, token: int) -> str | None:
        p = seq.params
        if not p.ignore_eos and token in self.eos_token_ids:
            return "stop"
        if token in p.stop_token_ids:
            return "stop"
        if seq.num_output_tokens >= p.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None
