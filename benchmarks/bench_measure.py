"""Measuring one generator on one set of chunks: wall time, tokens/s, TTFT, peak memory, outputs.

Peak memory is the device's: `torch.cuda.max_memory_allocated` on CUDA (reset before the run), or
the process's resident set size on the CPU, sampled every few milliseconds during the run (so it
is the whole process: model weights, KV pool, Python), falling back to ru_maxrss where /proc is
absent.
"""
from __future__ import annotations

import gc
import resource
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch

from app.llm.types import CodeChunk, DocResult


@dataclass
class RunMetrics:
    label: str
    chunks: int  # chunks measured
    seconds: float
    seconds_per_chunk: float
    completion_tokens: int
    tokens_per_second: float
    ttft_p50: float
    ttft_p95: float
    peak_memory_mib: float
    memory_kind: str  # "cuda_max_allocated" | "process_rss" | "process_max_rss"
    errors: int
    cached_prompt_tokens: int = 0
    prompt_tokens: int = 0
    error_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PeakMemory:
    """Context manager: peak device memory (MiB) over its body."""

    def __init__(self, device: torch.device, interval_s: float = 0.005) -> None:
        self.device, self.interval = device, interval_s
        self.peak_mib = 0.0
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "process_rss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif _rss_bytes() is None:
            self.kind = "process_max_rss"
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            rss = _rss_bytes() or 0
            self.peak_mib = max(self.peak_mib, rss / 2**20)
            if self._stop.wait(self.interval):
                return

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mib = max(self.peak_mib, (_rss_bytes() or 0) / 2**20)
        else:  # kilobytes on Linux, bytes on macOS; the process's peak since it started
            scale = 1 if sys.platform == "darwin" else 1024
            self.peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]); 0.0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(sorted(values), n=100, method="inclusive")[max(0, min(98, round(q) - 1))])


def run(generator: Any, chunks: Sequence[CodeChunk], label: str, device: torch.device,
        warmup: CodeChunk | None) -> tuple[RunMetrics, list[DocResult]]:
    """Warm up on one chunk outside the measured set, then time `generate_batch(chunks)`."""
    if warmup is not None:
        generator.generate_batch([warmup])
    gc.collect()
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        results = generator.generate_batch(list(chunks))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    ok = [r for r in results if r.ok]
    toks = sum(r.completion_tokens for r in ok)
    ttfts = [r.time_to_first_token for r in ok if r.time_to_first_token > 0]
    m = RunMetrics(
        label=label, chunks=len(chunks), seconds=seconds, seconds_per_chunk=seconds / max(len(chunks), 1),
        completion_tokens=toks, tokens_per_second=toks / seconds if seconds > 0 else 0.0,
        ttft_p50=percentile(ttfts, 50), ttft_p95=percentile(ttfts, 95), peak_memory_mib=mem.peak_mib,
        memory_kind=mem.kind, errors=len(results) - len(ok),
        cached_prompt_tokens=sum(r.cached_prompt_tokens for r in ok), prompt_tokens=sum(r.prompt_tokens for r in ok),
        error_examples=[str(r.error)[:200] for r in results if not r.ok][:3])
    return m, results


def identical_share(a: Sequence[DocResult], b: Sequence[DocResult]) -> dict[str, Any]:
    """How many chunks (over the shorter list) got exactly the same greedy output in both runs.

    Compared on generated token ids when both generators report them, else on the text.
    """
    n = min(len(a), len(b))
    same = 0
    for x, y in zip(a[:n], b[:n]):
        tx, ty = x.extra.get("token_ids"), y.extra.get("token_ids")
        if x.ok and y.ok and ((tx == ty) if tx is not None and ty is not None else x.text == y.text):
            same += 1
    return {"identical": same, "compared": n, "share": same / n if n else 0.0}


def in_fresh_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `fn` in a new thread that ends with it, and return its result (or raise its error).

    Keeps torch work off the main thread: on the CPU, once two threads each own an OpenMP team,
    libgomp throttles spinning (more threads than cores) and the engine thread's small decode ops
    slow down ~1.7x (see app/llm/engine_thread.py). A thread's team dies with the thread, so
    running each measured phase in its own short-lived thread keeps the comparison fair.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=target, name="bench-phase")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
