"""The guide's "Expected Speedups" table, measured: baseline, then each optimization added in turn.

Every row after the baseline builds a fresh OptimizedLocalDocGenerator with the settings of the
rows above it plus its own, asks that generator's `report()` whether the optimization it adds is
really active, and only then measures it. A row whose optimization is not active on this machine
says why instead of showing a number; a row for something the engine always does (its KV pool is
always pre-allocated) says so, as no separate measurement of it exists.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from benchmarks import bench_measure
from app.llm.types import CodeChunk, DocResult


@dataclass
class Step:
    label: str
    setup: str  # the guide's "Setup" column
    guide: str  # the guide's claimed speedup
    adds: dict[str, Any] = field(default_factory=dict)  # generator kwargs this row adds
    check: str | None = None  # the optimization (report() name) that must be active
    always_on: str | None = None  # set for rows the engine cannot turn off: why no own number


def steps(batch_size: int, draft_model: str | None) -> list[Step]:
    return [
        Step("Engine, batch 1, no reuse (not in the guide)", "max_batch_size=1, enable_static_cache=False", "-",
             dict(max_batch_size=1, enable_static_cache=False)),
        Step("+ KV cache reuse", "enable_static_cache=True", "1.4x", dict(enable_static_cache=True),
             check="kv_cache_reuse"),
        Step(f"+ Continuous batching ({batch_size})", f"max_batch_size={batch_size}", "4.2x",
             dict(max_batch_size=batch_size), check="continuous_batching"),
        Step("+ Static cache", "enable_static_cache=True", "4.6x",
             always_on="always on: the engine pre-allocates its paged KV pool in every engine row above"),
        Step("+ Quantized cache", "enable_kv_cache_quantization=True", "5.0x",
             dict(enable_kv_cache_quantization=True), check="kv_cache_quantization"),
        Step("+ torch.compile", "enable_compilation=True", "6.0x", dict(enable_compilation=True),
             check="compilation"),
        Step("+ Speculative decoding", "enable_speculative_decoding=True"
             + (f", draft_model_id={draft_model}" if draft_model else " (n-gram, no draft)"), "12-15x",
             dict(enable_speculative_decoding=True, draft_model_id=draft_model), check="speculative_decoding"),
    ]


def run_ablation(build: Callable[..., Any], chunks: Sequence[CodeChunk], baseline: bench_measure.RunMetrics,
                 baseline_results: Sequence[DocResult], device: torch.device, warmup: CodeChunk | None,
                 batch_size: int, draft_model: str | None,
                 progress: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [_row("Baseline", "Original local_client.py", "1.0x", "baseline", baseline,
                                       speedup=1.0, note=f"measured on {baseline.chunks} chunks")]
    settings: dict[str, Any] = {}
    previous: Sequence[DocResult] = baseline_results
    for st in steps(batch_size, draft_model):
        settings.update(st.adds)
        if st.always_on:
            rows.append(_row(st.label, st.setup, st.guide, "always on", None, note=st.always_on))
            continue
        progress(st.label)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gen = build(**settings)
        try:
            opt = gen.report()["optimizations"].get(st.check) if st.check else None
            if opt is not None and not opt["active"]:
                rows.append(_row(st.label, st.setup, st.guide, "unavailable", None,
                                 note=f"not available here: {opt['detail']}"))
                continue
            m, results = bench_measure.run(gen, chunks, st.label, device, warmup)
        finally:
            gen.close()
        same = bench_measure.identical_share(baseline_results, results)
        # Against the row above too: shows which step changed outputs (e.g. fp8 KV), and that the
        # steps after it (speculation) did not.
        same_prev = bench_measure.identical_share(previous, results)
        previous = results
        note = "; ".join(sorted({str(w.message).split(":")[0] for w in caught}))
        rows.append(_row(st.label, st.setup, st.guide, "measured", m,
                         speedup=baseline.seconds_per_chunk / m.seconds_per_chunk, identical=same,
                         identical_prev=same_prev, note=f"warned: {note}" if note else ""))
    return rows


def _row(label, setup, guide, status, m, speedup=None, identical=None, identical_prev=None, note="") -> dict[str, Any]:
    return {"configuration": label, "setup": setup, "guide_speedup": guide, "status": status,
            "speedup": speedup, "metrics": m.as_dict() if m is not None else None,
            "identical_to_baseline": identical, "identical_to_previous_row": identical_prev, "note": note}
