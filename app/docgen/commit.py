"""Group commit: finished results are buffered and written to the store together.

One SQLite transaction per result would cost a disk sync each; one per run would lose everything
on a kill. A group is committed when it holds `every` results or its oldest entry has waited
`seconds` (checked on every add and by the pipeline's ticker), so a killed run loses at most one
group: fewer than `every` results, or about `seconds` of work.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from app.docgen.store import Store, StoredResult


@dataclass
class GroupCommit:
    store: Store
    run_id: str
    replace: bool  # a --no-resume run overwrites stored results with the same key
    every: int = 32
    seconds: float = 1.0
    clock: Callable[[], float] = time.monotonic
    results: list[tuple[StoredResult, str, str, str, str]] = field(default_factory=list)
    links: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # reused results' unit rows
    commits: int = 0
    _since: float | None = None  # when the oldest buffered entry arrived

    def __post_init__(self) -> None:
        if self.every < 1 or self.seconds <= 0:
            raise ValueError("a group commit needs every >= 1 and seconds > 0")

    def add_result(self, stored: StoredResult, uid: str, path: str, qualname: str, chash: str) -> bool:
        """Buffer one generated result; returns True if this add committed the group."""
        self.results.append((stored, uid, path, qualname, chash))
        return self._added()

    def add_link(self, uid: str, path: str, qualname: str, key: str, chash: str) -> bool:
        """Buffer one unit row pointing at a reused result (losing it on a kill costs nothing)."""
        self.links.append((uid, path, qualname, key, chash))
        return self._added()

    def _added(self) -> bool:
        if self._since is None:
            self._since = self.clock()
        return self.flush() > 0 if self.due() else False

    @property
    def pending(self) -> int:
        return len(self.results) + len(self.links)

    def due(self) -> bool:
        if not self.pending:
            return False
        return len(self.results) >= self.every or self.clock() - (self._since or 0.0) >= self.seconds

    def flush(self) -> int:
        """Commit everything buffered in one transaction; returns the number of entries written."""
        n = self.pending
        if n:
            results, links = self.results, self.links
            self.results, self.links, self._since = [], [], None
            self.store.put_many(results, self.run_id, replace=self.replace, links=links)
            self.commits += 1
        return n
