"""The optional progress bar of LLM.generate(progress=True)."""
from __future__ import annotations

import time

from .outputs import RequestOutput


class GenerateProgress:
    """A rich progress bar for long generate() calls (off by default in library use)."""

    def __init__(self, total: int):
        from rich.progress import Progress

        self.p = Progress()
        self.p.start()
        self.task = self.p.add_task("generating", total=total)
        self.t0, self.tokens = time.perf_counter(), 0

    def advance(self, o: RequestOutput) -> None:
        self.tokens += len(o.token_ids)
        rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        self.p.update(self.task, advance=1, description=f"generating ({rate:.0f} tok/s)")

    def close(self) -> None:
        self.p.stop()
