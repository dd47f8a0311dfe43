"""`python -m app.llm.benchmark_local`: the original generator against the optimized one.

    python -m app.llm.benchmark_local --model Qwen/Qwen2.5-Coder-7B-Instruct --chunks 100 --batch-size 8
    python -m app.llm.benchmark_local --random-weights tiny --ablation --chunks 32 --json out.json

Both generators document the same chunks (functions and classes cut from real code; by default
the Python standard library). Each is warmed up on one extra chunk first (not measured; for the
optimized generator this also puts the shared system prompt in its prefix cache, as in steady
use). Prints the guide's three lines, then tokens/s, time to first token, peak memory and the
share of chunks whose greedy output is identical; `--ablation` measures the guide's
"Expected Speedups" table row by row.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also run as a script
from benchmarks import bench_ablation, bench_chunks, bench_measure, bench_report  # noqa: E402

DEFAULT_BASELINE_CHUNKS = 32  # the original is slow: measured on at most this many, then extrapolated


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app.llm.benchmark_local", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a local checkpoint folder or hub id (both generators load it)")
    src.add_argument("--random-weights", metavar="PRESET",
                     help="build a random-weight model of this shape: tiny, cpu-31m, qwen2.5-coder-1.5b, "
                          "qwen2.5-coder-7b (speed depends on shape, not values)")
    p.add_argument("--chunks", type=int, default=100, help="chunks to document (default 100)")
    p.add_argument("--batch-size", type=int, default=8, help="the optimized generator's max_batch_size (default 8)")
    p.add_argument("--baseline-chunks", type=int, default=None,
                   help=f"measure the original on only this many chunks and extrapolate per chunk "
                        f"(default: min(--chunks, {DEFAULT_BASELINE_CHUNKS}))")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="new tokens per chunk (default 128 on CUDA, 48 on the CPU)")
    p.add_argument("--max-seq-length", type=int, default=4096)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--quantization", default="none", choices=["none", "4bit", "8bit"],
                   help="weight quantization for both generators (default none, so outputs are comparable)")
    p.add_argument("--speculative", action="store_true", help="optimized: enable_speculative_decoding=True")
    p.add_argument("--draft-model", default=None, help="draft model for speculative decoding (path or hub id)")
    p.add_argument("--kv-fp8", action="store_true", help="optimized: enable_kv_cache_quantization=True")
    p.add_argument("--compile", action="store_true", help="optimized: enable_compilation=True")
    p.add_argument("--ignore-eos", action="store_true", help="generate exactly --max-new-tokens per chunk")
    p.add_argument("--source", default=None, help="directory (or file) of Python code to cut chunks from")
    p.add_argument("--ablation", action="store_true", help="measure the guide's Expected Speedups table")
    p.add_argument("--json", default=None, metavar="PATH", help="write every measurement to this JSON file")
    p.add_argument("--plot", default=None, metavar="PATH", help="bar chart of the speedups (needs matplotlib)")
    a = p.parse_args(argv)
    for name in ("chunks", "batch_size", "baseline_chunks", "max_new_tokens"):
        v = getattr(a, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return a


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(name)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is available; use --device cpu")
    return d


def _random_checkpoint(preset: str, device: torch.device, out_dir: str, console: Console) -> tuple[str, dict]:
    from benchmarks.random_checkpoint import PRESETS, build_checkpoint, preset_config

    if preset not in PRESETS:
        raise SystemExit(f"--random-weights {preset!r}: unknown preset; choose one of {', '.join(PRESETS)}")
    overrides = {}
    if preset_config(preset).max_position_embeddings < 4096:  # room for the system prompt + a chunk
        overrides["max_position_embeddings"] = 4096
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    path = build_checkpoint(out_dir, preset, dtype=dtype, device=device, overrides=overrides or None)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    info = {"preset": preset, "description": PRESETS[preset].description, "dtype": str(dtype).replace("torch.", ""),
            "overrides": overrides, "build_seconds": time.perf_counter() - t0}
    console.print(f"random-weight checkpoint: {preset} ({info['description']}, {info['dtype']}) built in "
                  f"{info['build_seconds']:.1f}s", highlight=False)
    return str(path), info


def _quiet(factory, console: Console, **kwargs):
    """Build a generator, printing its warnings once as notes instead of Python warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen = factory(**kwargs)
    for w in dict.fromkeys(str(w.message) for w in caught):
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    return gen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    device = _device(args.device)
    max_new = args.max_new_tokens or (128 if device.type == "cuda" else 48)
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        model, model_info = args.model, {}
        if args.random_weights:
            model, model_info = bench_measure.in_fresh_thread(_random_checkpoint, args.random_weights, device, tmp, console)
        return _run(args, console, device, max_new, model, model_info)


def _run(args, console: Console, device: torch.device, max_new: int, model: str, model_info: dict) -> int:
    from app.llm.local_client import create_local_generator
    from app.llm.local_client_optimized import create_optimized_local_generator

    n = args.chunks
    nb = min(args.baseline_chunks or min(n, DEFAULT_BASELINE_CHUNKS), n)
    picked = bench_chunks.load_chunks(n + 1, args.source)
    chunks, warm = picked[:n], picked[n]
    label = f"random-weights:{args.random_weights}" if args.random_weights else model
    console.print(f"model {label} | device {device} | {n} chunks from {args.source or 'the standard library'} | "
                  f"{max_new} new tokens, greedy | quantization {args.quantization}", highlight=False)
    common = dict(model_id=model, quantization=args.quantization, device=str(device), max_new_tokens=max_new,
                  max_seq_length=args.max_seq_length, ignore_eos=args.ignore_eos)

    console.print(f"original generator: {nb} chunks, one at a time ...", highlight=False)

    def run_original():
        base = _quiet(create_local_generator, console, **common)
        try:
            return bench_measure.run(base, chunks[:nb], "original", device, warm)
        finally:
            base.close()

    orig, orig_results = bench_measure.in_fresh_thread(run_original)

    opt_kwargs = dict(common, max_batch_size=args.batch_size, enable_speculative_decoding=args.speculative,
                      draft_model_id=args.draft_model, enable_kv_cache_quantization=args.kv_fp8,
                      enable_compilation=args.compile)
    console.print(f"optimized generator: {n} chunks, max_batch_size {args.batch_size} ...", highlight=False)
    gen = _quiet(create_optimized_local_generator, console, **opt_kwargs)
    try:
        opt, opt_results = bench_measure.run(gen, chunks, "optimized", device, warm)
        report = gen.report()
    finally:
        gen.close()

    same = bench_measure.identical_share(orig_results, opt_results)
    for line in bench_report.guide_lines(n, orig, opt, extrapolated=nb < n):
        print(line)
    console.print(bench_report.comparison_table(orig, opt, same))
    console.print("Time to first token counts from the moment a chunk was submitted: all chunks are submitted at "
                  "once, so the original's includes waiting for the chunks before it.", highlight=False)
    console.print("active optimizations: " + ", ".join(report["active"]), highlight=False)
    for name, why in report["inactive"].items():
        console.print(f"  inactive {name}: {why}", highlight=False)

    rows = None
    if args.ablation:
        def build(**kw):
            # Flash attention is only a CUDA thing; the warning about it was printed once above.
            return create_optimized_local_generator(**common, use_flash_attention=device.type == "cuda", **kw)

        rows = bench_ablation.run_ablation(
            build, chunks, orig, orig_results, device, warm, args.batch_size, args.draft_model,
            progress=lambda s: console.print(f"ablation: {s} ...", highlight=False))
        console.print(bench_report.ablation_table(rows))
        console.print(f"Speedups are seconds per chunk of the original ({orig.chunks} chunks, one at a time) over "
                      f"seconds per chunk of each row ({n} chunks at once); 'identical' compares greedy token ids "
                      "with the original on the chunks both ran.", highlight=False)

    data: dict[str, Any] = {
        "environment": bench_report.environment(device), "model": label, "model_info": model_info,
        "args": vars(args), "max_new_tokens": max_new, "chunks": n, "baseline_chunks": nb,
        "baseline_extrapolated": nb < n, "chunk_ids": [f"{c.path}:{c.name}" for c in chunks],
        "original": orig.as_dict(), "optimized": opt.as_dict(),
        "original_total_seconds_extrapolated": orig.seconds_per_chunk * n,
        "speedup": orig.seconds_per_chunk / opt.seconds_per_chunk, "lossless": same,
        "optimized_report": report, "ablation": rows,
    }
    if args.json:
        bench_report.write_json(args.json, data)
        console.print(f"wrote {args.json}", highlight=False)
    if args.plot and not bench_report.plot(args.plot, data, console):
        return 2
    if args.plot:
        console.print(f"wrote {args.plot}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
