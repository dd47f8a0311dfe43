"""The scheduler's queues ordered by request priority, first come first served among equals.

A request's `priority` (lower value = served first, as in vLLM) orders the waiting queue; among
equal priorities the one that arrived first goes first. A preempted sequence keeps its place key,
so it goes back ahead of every later arrival of its priority (with one priority for all, that is
the front of the queue, as a plain FCFS queue does).

Running sequences are kept ordered by (priority, admission): the scheduler serves them in that
order and preempts from the tail, so the lowest priority, most recently admitted goes first. With
one priority for all this is admission order, the order the scheduler always had.
"""
from __future__ import annotations

import bisect
import itertools
from typing import Iterator

from .sequence import Sequence


class WaitingQueue:
    """Sequences waiting for admission, in (priority, arrival) order."""

    def __init__(self) -> None:
        self._keys: list[tuple[int, int]] = []
        self._seqs: list[Sequence] = []
        self._arrival = itertools.count()

    def push(self, seq: Sequence) -> None:
        """Queue `seq`; a sequence seen before (preempted) keeps its arrival, a new one gets the next."""
        if seq.arrival_order is None:
            seq.arrival_order = next(self._arrival)
        key = (seq.priority, seq.arrival_order)
        i = bisect.bisect_right(self._keys, key)
        self._keys.insert(i, key)
        self._seqs.insert(i, seq)

    def peek(self) -> Sequence:
        return self._seqs[0]

    def pop(self) -> Sequence:
        self._keys.pop(0)
        return self._seqs.pop(0)

    def remove(self, seq: Sequence) -> None:
        i = self._seqs.index(seq)  # identity: Sequence compares by identity (eq=False)
        del self._keys[i], self._seqs[i]

    def __contains__(self, seq: object) -> bool:
        return any(s is seq for s in self._seqs)

    def __len__(self) -> int:
        return len(self._seqs)

    def __iter__(self) -> Iterator[Sequence]:
        return iter(list(self._seqs))


class RunningOrder:
    """Admission numbers for the running list: insert position by (priority, admission)."""

    def __init__(self) -> None:
        self._admitted = itertools.count()

    def insert(self, running: list[Sequence], seq: Sequence) -> None:
        seq.admission_order = next(self._admitted)
        key = (seq.priority, seq.admission_order)
        i = len(running)
        while i > 0 and (running[i - 1].priority, running[i - 1].admission_order) > key:
            i -= 1  # most admissions land at the tail: scan from there
        running.insert(i, seq)
