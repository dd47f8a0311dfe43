"""Endpoint pool: per-endpoint concurrency limits, least-loaded choice, cooldown after failures.

Bookkeeping only (no I/O), so it is tested directly. One asyncio loop uses it at a time; the
wake-up Condition is re-created when the loop changes (generate_batch runs a loop per call).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Endpoint:
    url: str
    limit: int
    in_flight: int = 0
    served: int = 0
    failures: int = 0  # consecutive
    cooldown_until: float = 0.0
    retries: int = 0

    @property
    def load(self) -> float:
        return self.in_flight / self.limit


@dataclass
class EndpointPool:
    urls: list[str]
    limit: int
    max_cooldown: float = 10.0
    endpoints: list[Endpoint] = field(init=False)

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("give at least one --base-url")
        if self.limit < 1:
            raise ValueError(f"per-endpoint concurrency must be >= 1, got {self.limit}")
        self.endpoints = [Endpoint(u, self.limit) for u in self.urls]
        self._cond: asyncio.Condition | None = None
        self._loop = None

    def pick(self, now: float | None = None) -> Endpoint | None:
        """The least-loaded endpoint with a free slot, preferring ones not cooling down after a failure."""
        now = time.monotonic() if now is None else now
        free = [e for e in self.endpoints if e.in_flight < e.limit]
        if not free:
            return None
        healthy = [e for e in free if e.cooldown_until <= now]
        # All cooling down: still try the one whose cooldown ends first (a restarted server comes back).
        pool = healthy or [min(free, key=lambda e: e.cooldown_until)]
        return min(pool, key=lambda e: (e.load, e.served))

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._cond is None or self._loop is not loop:
            self._cond, self._loop = asyncio.Condition(), loop
        return self._cond

    async def acquire(self) -> Endpoint:
        cond = self._condition()
        async with cond:
            while (ep := self.pick()) is None:
                await cond.wait()
            ep.in_flight += 1
            return ep

    async def release(self, ep: Endpoint, ok: bool) -> None:
        ep.in_flight -= 1
        if ok:
            ep.served += 1
            ep.failures, ep.cooldown_until = 0, 0.0
        else:
            ep.failures += 1
            ep.retries += 1
            ep.cooldown_until = time.monotonic() + min(self.max_cooldown, 0.25 * 2 ** ep.failures)
        cond = self._condition()
        async with cond:
            cond.notify()
