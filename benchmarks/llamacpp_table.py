"""The table of benchmarks/cpu_vs_llamacpp.py: measurements in, one markdown table out.

A measurement is one timed run of one side ("ours" | "llama.cpp") in one round of one precision
pair: {"pair", "kind", "side", "round", "seconds", "tokens"}, kind "docgen" (all requests at once,
generated tokens), "decode" (batch 1, decode steps) or "prompt" (batch 1, prompt tokens).
Rates are tokens / seconds; the ratio is ours / llama.cpp, per round (the two sides of a round run
back to back, so they share the machine's load) and then the median over rounds.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

SIDES = ("ours", "llama.cpp")
KIND_LABELS = {"docgen": "docgen workload", "decode": "batch-1 decode", "prompt": "batch-1 prompt"}


@dataclass
class Row:
    pair: str  # e.g. "q4_0 / 4bit"
    kind: str
    seconds: dict[str, float | None]  # side -> median seconds (None: that side was not run)
    rate: dict[str, float | None]  # side -> median tokens/s
    ratio: float | None  # median over rounds of ours rate / llama.cpp rate
    ratio_range: tuple[float, float] | None  # min, max of the per-round ratios
    peak_rss: dict[str, int | None]  # side -> bytes (VmHWM of the process)


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summarize(measurements: list[dict], memory: dict[str, dict[str, dict]]) -> list[Row]:
    """Rows in first-seen order of (pair, kind). memory: pair -> side -> {"peak_rss", "rss"}."""
    keys: list[tuple[str, str]] = []
    for m in measurements:
        if m["side"] not in SIDES:
            raise ValueError(f"unknown side {m['side']!r}; expected one of {SIDES}")
        if m["seconds"] <= 0 or m["tokens"] <= 0:
            raise ValueError(f"a measurement needs seconds > 0 and tokens > 0, got {m}")
        if (m["pair"], m["kind"]) not in keys:
            keys.append((m["pair"], m["kind"]))
    rows = []
    for pair, kind in keys:
        ms = [m for m in measurements if m["pair"] == pair and m["kind"] == kind]
        by_side = {s: [m for m in ms if m["side"] == s] for s in SIDES}
        rate = {s: _median([m["tokens"] / m["seconds"] for m in by_side[s]]) for s in SIDES}
        seconds = {s: _median([m["seconds"] for m in by_side[s]]) for s in SIDES}
        theirs = {m["round"]: m["tokens"] / m["seconds"] for m in by_side["llama.cpp"]}
        per_round = [m["tokens"] / m["seconds"] / theirs[m["round"]] for m in by_side["ours"] if m["round"] in theirs]
        mem = memory.get(pair, {})
        rows.append(Row(pair, kind, seconds, rate, _median(per_round),
                        (min(per_round), max(per_round)) if per_round else None,
                        {s: (mem.get(s) or {}).get("peak_rss") for s in SIDES}))
    return rows


def _f(x: float | None, fmt: str) -> str:
    return "not run" if x is None else format(x, fmt)


def format_table(rows: list[Row], workload_label: str = "") -> str:
    """Markdown: one line per (precision pair, workload)."""
    head = ("| llama.cpp / ours | workload | ours s | llama.cpp s | ours tok/s | llama.cpp tok/s "
            "| ours / llama.cpp (range over rounds) | ours peak RSS MiB | llama.cpp peak RSS MiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        label = KIND_LABELS.get(r.kind, r.kind) + (f" {workload_label}" if r.kind == "docgen" and workload_label else "")
        if r.ratio is None:
            ratio = "-"
        else:
            lo, hi = r.ratio_range
            ratio = f"**{r.ratio:.2f}x** ({lo:.2f}-{hi:.2f})"
        rss = {s: None if r.peak_rss[s] is None else r.peak_rss[s] / 2**20 for s in SIDES}
        lines.append(f"| {r.pair} | {label} | {_f(r.seconds['ours'], '.2f')} | {_f(r.seconds['llama.cpp'], '.2f')} "
                     f"| {_f(r.rate['ours'], '.1f')} | {_f(r.rate['llama.cpp'], '.1f')} | {ratio} "
                     f"| {_f(rss['ours'], '.0f')} | {_f(rss['llama.cpp'], '.0f')} |")
    return "\n".join(lines)
