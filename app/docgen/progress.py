"""Progress for a run: an observer interface, a plain line printer and a rich live display.

Both displays are never silent for long: the live one redraws several times a second with the
time spent on the current step; the plain one prints a heartbeat every few seconds while a step
(model loading, a batch) is still running.
"""
from __future__ import annotations

import threading
import time
from collections import Counter


class Observer:
    """Events the pipeline reports. The base class records state and prints nothing."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.cached = 0
        self.waves = 0
        self.wave_index = 0
        self.failures: Counter = Counter()
        self.tokens = 0
        self.gen_seconds = 0.0
        self.generated = 0
        self.in_flight = 0  # chunks at the generator now (set by the pipeline)
        self.activity = "starting"
        self.activity_since = time.monotonic()
        self.started = time.monotonic()

    def _set(self, activity: str) -> None:
        self.activity, self.activity_since = activity, time.monotonic()

    def message(self, text: str) -> None:
        self._set(text)

    def start(self, total: int, waves: int) -> None:
        self.total, self.waves = total, waves
        self._set(f"{total} chunks in {waves} waves")

    def wave(self, index: int, count: int, size: int, to_generate: int) -> None:
        self.wave_index = index
        self._set(f"wave {index}/{count}: {size} chunks, {to_generate} to generate")

    def batch_start(self, size: int, retry: bool = False) -> None:
        self._set(f"{'retrying' if retry else 'generating'} a batch of {size} chunks")

    def batch_done(self, tokens: int, seconds: float) -> None:
        """Called on every group commit: tokens generated so far and seconds spent generating."""
        self.tokens, self.gen_seconds = tokens, seconds

    def unit_done(self, uid: str, cached: bool, flags: list[dict], tokens: int = 0) -> None:
        self.done += 1
        self.cached += cached
        self.generated += not cached
        for cause in {f["cause"] for f in flags}:
            self.failures[cause] += 1

    def failure(self, cause: str) -> None:
        self.failures[cause] += 1

    def finish(self) -> None:
        pass

    # ---- derived numbers ------------------------------------------------------------------
    def tokens_per_second(self) -> float:
        return self.tokens / self.gen_seconds if self.gen_seconds else 0.0

    def eta_seconds(self) -> float | None:
        if not self.generated:
            return None
        per_chunk = self.gen_seconds / self.generated
        return per_chunk * max(0, self.total - self.done)

    def status_line(self) -> str:
        eta = self.eta_seconds()
        fails = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "none"
        return (f"{self.done}/{self.total} chunks ({self.cached} reused, {self.in_flight} in flight) | "
                f"{self.tokens_per_second():.1f} tok/s | "
                f"ETA {'?' if eta is None else f'{eta:.0f}s'} | flagged: {fails} | "
                f"{self.activity} ({time.monotonic() - self.activity_since:.0f}s)")


class PlainProgress(Observer):
    """For logs and pipes: one line per event, and a heartbeat while a step runs long."""

    def __init__(self, print_fn=print, heartbeat_s: float = 5.0) -> None:
        super().__init__()
        self.print = print_fn
        self.heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if time.monotonic() - self.activity_since < self.heartbeat_s:
                continue
            if self.in_flight:  # generating: the counts move, the last event's text does not
                self.print(f"  ... {self.status_line()}")
            else:
                self.print(f"  ... still {self.activity} ({time.monotonic() - self.activity_since:.0f}s)")

    def _set(self, activity: str) -> None:
        super()._set(activity)
        self.print(f"[docgen] {activity}")

    def batch_done(self, tokens: int, seconds: float) -> None:
        super().batch_done(tokens, seconds)
        self.print(f"[docgen] {self.status_line()}")

    def finish(self) -> None:
        self._stop.set()


class RichProgress(Observer):
    """A live panel: chunks done/total, tokens/s, ETA, failures by cause, the current step."""

    def __init__(self, console) -> None:
        super().__init__()
        from rich.live import Live

        self.console = console
        self.live = Live(get_renderable=self._render, console=console, refresh_per_second=4, transient=False)
        self.live.start()

    def _render(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        table.add_row("chunks", ProgressBar(total=max(self.total, 1), completed=self.done, width=30),
                      f"{self.done}/{self.total} ({self.cached} reused)  {self.in_flight} in flight")
        eta = self.eta_seconds()
        table.add_row("speed", f"{self.tokens_per_second():.1f} tok/s",
                      f"ETA {'estimating' if eta is None else f'{eta:.0f}s'}")
        fails = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items())) or "none"
        table.add_row("flagged", fails, "")
        table.add_row("now", self.activity, f"{time.monotonic() - self.activity_since:.0f}s")
        return table

    def finish(self) -> None:
        self.live.stop()
