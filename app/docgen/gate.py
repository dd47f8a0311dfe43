"""PriorityGate: at most `cap` chunks at the generator; waiting chunks enter in priority order.

The engine serves its waiting queue first come, first served. If docgen handed it every ready
chunk at once, a chunk on the dependency graph's critical path (a class whose methods just
finished, a module chunk, a retry) would queue behind hundreds of leaves and the run would end
in a long thin tail. So docgen keeps the engine's queue full but short (the cap: a few times the
engine's batch), and lets the chunk with the most work depending on it in first.

A generator whose engine admits requests by priority (`schedules_by_priority`; the local engine)
reads each chunk's priority itself; for it the gate only caps the chunks in flight (pipeline.py).
"""
from __future__ import annotations

import asyncio
import heapq
import itertools


class PriorityGate:
    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("the gate needs a cap >= 1")
        self.cap = cap
        self.used = 0
        self._waiting: list[tuple[int, int, asyncio.Future]] = []  # (priority, arrival, future); lowest first
        self._arrival = itertools.count()

    async def acquire(self, priority: int) -> None:
        """Wait for a slot; a lower `priority` value goes first (ties: first come, first served)."""
        if self.used < self.cap and not self._waiting:
            self.used += 1
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._arrival), fut))
        try:
            await fut  # resolved by release(), which hands over its slot
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # the slot was already ours: pass it on
                self.release()
            raise

    def release(self) -> None:
        """Free a slot. The next waiter is chosen on the loop's next turn, so chunks that the
        finished one just made ready (their tasks start first) compete for the slot too."""
        self.used -= 1
        asyncio.get_running_loop().call_soon(self._admit)

    def resize(self, cap: int) -> None:
        """A new cap (e.g. once the generator says how many sequences its engine batches)."""
        self.cap = max(1, cap)
        self._admit()

    def _admit(self) -> None:
        while self._waiting and self.used < self.cap:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():  # a cancelled waiter is skipped
                self.used += 1
                fut.set_result(None)
