"""Continuous batching on a token budget, with chunked prefill, prefix sharing and preemption.

Pure Python bookkeeping (no torch). Each `schedule()` call picks, for one model step, how many
new tokens each sequence computes: running sequences first (decode = 1 token, or the rest of a
chunked prefill, plus any speculative proposals), then waiting ones in arrival order while the
token budget, the sequence cap and the KV blocks allow. When a running sequence needs a block
and none is free, the newest running sequence is preempted (its KV dropped, to be recomputed)
and requeued at the front. `update()` applies the sampled tokens after the model ran.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from .block_manager import BlockManager
from .sequence import Sequence, SequenceStatus


@dataclass
class ScheduledSeq:
    seq: Sequence
    num_new_tokens: int  # tokens computed this step, starting at seq.num_computed_tokens
    num_spec_tokens: int = 0  # of those, trailing speculative proposals to verify

    @property
    def samples(self) -> bool:
        """Whether this step yields the sequence's next token (its prefill is complete)."""
        s = self.seq
        return s.num_computed_tokens + self.num_new_tokens - self.num_spec_tokens >= s.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    num_batched_tokens: int = 0
    new_blocks: list[int] = field(default_factory=list)  # blocks registered (keyed) this step
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


@dataclass
class SchedulerStats:
    steps: int = 0
    preemptions: int = 0
    prompt_tokens: int = 0
    prefix_cache_hit_tokens: int = 0
    computed_tokens: int = 0
    max_seqs_in_step: int = 0
    seqs_in_steps: int = 0


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
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.stats = SchedulerStats()

    # ----- intake and exit -----------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

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
            n = seq.num_tokens + n_spec - seq.num_computed_tokens
            if n > budget:  # no room for every proposal: verify none this step
                seq.spec_token_ids, n_spec = [], 0
                n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if n <= 0:
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
        self.waiting.appendleft(seq)
        out.preempted.append(seq)

    def _admit(self, budget: int, scheduled: list, out: SchedulerOutput) -> int:
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
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
            self.waiting.popleft()
            seq.block_table = hits + new
            seq.block_keys = self.bm.prefix_keys(seq.token_ids, len(hits))
            seq.num_computed_tokens = computed
            seq.status = SequenceStatus.RUNNING
            if seq.metrics.first_scheduled_time is None:
                seq.metrics.first_scheduled_time = time.perf_counter()
                seq.num_cached_tokens = computed
                self.stats.prompt_tokens += seq.num_prompt_tokens
                self.stats.prefix_cache_hit_tokens += computed
            self.running.append(seq)
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
    def update(self, out: SchedulerOutput, sampled: dict[int, list[int]]) -> list[Sequence]:
        """Advance computed counts, append sampled tokens and apply token-level stops.

        `sampled[seq_id]` lists the tokens accepted this step (1 for plain decode, more with
        speculative decoding), only for sequences whose step samples. Returns the sequences
        that finished in this step.
        """
        self.bm.mark_computed(out.new_blocks)
        now = time.perf_counter()
        finished = []
        for s in out.scheduled:
            seq = s.seq
            if seq.is_finished:
                continue
            seq.num_computed_tokens += s.num_new_tokens - s.num_spec_tokens
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
