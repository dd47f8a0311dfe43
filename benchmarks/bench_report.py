"""Printing, JSON and the plot of `python -m app.llm.benchmark_local`."""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.bench_measure import RunMetrics


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device), "device_name": name, "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "platform": platform.platform(), "git_commit": _git_commit(),
    }


def _cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _git_commit() -> str | None:
    try:
        root = pathlib.Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def guide_lines(n: int, orig: RunMetrics, opt: RunMetrics, extrapolated: bool) -> list[str]:
    """The guide's three lines; the original's total is extrapolated per chunk when it ran on fewer."""
    orig_total = orig.seconds_per_chunk * n
    note = f" [extrapolated from {orig.chunks} measured chunks]" if extrapolated else ""
    return [
        f"Original generator: {n} chunks in {orig_total:.1f}s ({orig.seconds_per_chunk:.2f}s/chunk){note}",
        f"Optimized generator: {opt.chunks} chunks in {opt.seconds:.1f}s ({opt.seconds_per_chunk:.2f}s/chunk)",
        f"Speedup: {orig.seconds_per_chunk / opt.seconds_per_chunk:.1f}x",
    ]


def comparison_table(orig: RunMetrics, opt: RunMetrics, same: dict[str, Any]) -> Table:
    t = Table(title="Original vs optimized")
    t.add_column("metric")
    t.add_column("original", justify="right")
    t.add_column("optimized", justify="right")
    mem = "peak memory (CUDA max allocated)" if orig.memory_kind == "cuda_max_allocated" else "peak memory (process RSS)"
    rows = [
        ("chunks measured", f"{orig.chunks}", f"{opt.chunks}"),
        ("seconds per chunk", f"{orig.seconds_per_chunk:.3f}", f"{opt.seconds_per_chunk:.3f}"),
        ("generated tokens/s", f"{orig.tokens_per_second:.1f}", f"{opt.tokens_per_second:.1f}"),
        ("time to first token p50 (s)", f"{orig.ttft_p50:.3f}", f"{opt.ttft_p50:.3f}"),
        ("time to first token p95 (s)", f"{orig.ttft_p95:.3f}", f"{opt.ttft_p95:.3f}"),
        (mem + " MiB", f"{orig.peak_memory_mib:.0f}", f"{opt.peak_memory_mib:.0f}"),
        ("prompt tokens served from cache", f"{orig.cached_prompt_tokens}/{orig.prompt_tokens}",
         f"{opt.cached_prompt_tokens}/{opt.prompt_tokens}"),
        ("chunks with errors", f"{orig.errors}", f"{opt.errors}"),
    ]
    for r in rows:
        t.add_row(*r)
    t.add_row("identical greedy output", f"{same['identical']}/{same['compared']} chunks",
              f"{100 * same['share']:.0f}%")
    return t


def ablation_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Expected Speedups, measured (each row adds to the rows above)")
    for col, just in (("Configuration", "left"), ("Setup", "left"), ("Guide", "right"), ("Measured", "right"),
                      ("s/chunk", "right"), ("tok/s", "right"), ("TTFT p50", "right"), ("identical vs base", "right"),
                      ("vs row above", "right"),
                      ("note", "left")):
        t.add_column(col, justify=just, overflow="fold")
    for r in rows:
        m = r["metrics"]
        if m is None:
            t.add_row(r["configuration"], r["setup"], r["guide_speedup"], r["status"], "-", "-", "-", "-", "-",
                      r["note"])
            continue
        same, prev = r["identical_to_baseline"], r.get("identical_to_previous_row")
        t.add_row(r["configuration"], r["setup"], r["guide_speedup"], f"{r['speedup']:.2f}x",
                  f"{m['seconds_per_chunk']:.3f}", f"{m['tokens_per_second']:.0f}", f"{m['ttft_p50']:.3f}",
                  f"{same['identical']}/{same['compared']}" if same else "-",
                  f"{prev['identical']}/{prev['compared']}" if prev else "-", r["note"])
    return t


def write_json(path: str, data: dict[str, Any]) -> None:
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2, default=str) + "\n")


def plot(path: str, data: dict[str, Any], console: Console) -> bool:
    """Bar chart of measured speedups (ablation rows, or original vs optimized). False if impossible."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        console.print(f"[red]--plot {path}: matplotlib is not installed; install it with "
                      "`pip install matplotlib` (or the project's `plot` extra). Everything else was written.[/red]",
                      highlight=False)
        return False
    rows = data.get("ablation") or []
    measured = [r for r in rows if r["speedup"] is not None]
    if measured:
        labels, values = [r["configuration"] for r in measured], [r["speedup"] for r in measured]
        skipped = [r["configuration"] for r in rows if r["speedup"] is None]
    else:
        labels, values, skipped = ["Original", "Optimized"], [1.0, data["speedup"]], []
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(labels) + 1.8))
    ax.barh(labels[::-1], values[::-1], color="#4878a8")
    for i, v in enumerate(values[::-1]):
        ax.text(v, i, f" {v:.2f}x", va="center")
    ax.set_xlabel("speedup over the original generator (measured)")
    env = data["environment"]
    title = f"{data['model']} on {env['device_name']} ({env['date'][:10]})"
    if skipped:
        title += "\nnot available here: " + ", ".join(skipped)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def stderr_console() -> Console:
    return Console(file=sys.stderr)
