"""Quantization inside the engine: the guide's Memory Usage table, measured, plus speed.

For each configuration (full-precision / 8-bit / 4-bit weights, each with and without the fp8
KV cache) on one checkpoint: weight memory, KV capacity in tokens at a fixed KV budget, batch-1
decode tokens/s, throughput on a small docgen-like workload, and greedy agreement with the
unquantized engine on that workload (meaningless on random weights: use --model with trained
weights, e.g. ../shared/models/docstring-13m, for agreement).

    python benchmarks/quant_engine.py --json bench_out/quant_engine.json
    python benchmarks/quant_engine.py --model ../shared/models/docstring-13m
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.checks import common_prefix  # noqa: E402
from benchmarks.workload import docgen_workload  # noqa: E402

CONFIGS = [(None, "auto"), ("8bit", "auto"), ("4bit", "auto"), (None, "fp8"), ("8bit", "fp8"), ("4bit", "fp8")]


def measure(path, fmt, kv, args, wl, device):
    from app.engine import LLM, SamplingParams
    from app.engine.quant import weight_bytes

    llm = LLM(path, quantization=fmt, kv_cache_dtype=kv, kv_cache_memory_gb=args.kv_budget_gb, device=device,
              quant_cache_dir="", max_num_seqs=64)
    row = {"weights": fmt or "full", "kv": "fp8" if kv == "fp8" else str(llm.dtype).replace("torch.", ""),
           "weight_mib": weight_bytes(llm.runner.model) / 2**20, "kv_tokens": llm.load_report.kv_tokens}
    prompt = wl.prompts[0][:64]
    sp1 = SamplingParams(max_tokens=args.decode_tokens, ignore_eos=True)
    llm.generate([prompt], SamplingParams(max_tokens=4, ignore_eos=True))
    rates = []
    for _ in range(args.repeats):
        o = llm.generate([prompt], sp1)[0]
        m = o.metrics
        rates.append((args.decode_tokens - 1) / (m["total_time"] - m["time_to_first_token"]))
    row["batch1_tok_s"] = statistics.median(rates)
    llm.block_manager.reset_prefix_cache()
    t = time.perf_counter()
    outs = llm.generate(wl.prompts, SamplingParams(max_tokens=wl.max_new_tokens, ignore_eos=True))
    row["workload_s"] = time.perf_counter() - t
    row["tokens"] = [o.token_ids for o in outs]
    return row


def real_prompts(path, n):
    from transformers import AutoTokenizer

    from benchmarks.bench_chunks import load_chunks
    from app.llm.prompts import render_prompt

    tok = AutoTokenizer.from_pretrained(path)
    return [tok.encode(render_prompt(tok, c), add_special_tokens=False) for c in load_chunks(n)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="local checkpoint (default: a random-weight --preset)")
    ap.add_argument("--preset", default="cpu-31m")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kv-budget-gb", type=float, default=0.25)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from benchmarks.random_checkpoint import build_checkpoint
    from transformers import AutoConfig

    path = args.model or str(build_checkpoint(tempfile.mkdtemp(prefix="quant_engine_"), args.preset))
    vocab = AutoConfig.from_pretrained(path).vocab_size
    wl = docgen_workload(args.requests, vocab, 100, 150, 300, 32)
    if args.model:  # trained weights: real prompts (functions of the standard library), so agreement means something
        wl.prompts = real_prompts(path, args.requests)
    rows = [measure(path, f, kv, args, wl, args.device) for f, kv in CONFIGS]
    ref = rows[0]["tokens"]
    for r in rows:
        toks = r.pop("tokens")
        # Share of generated tokens before the first divergence from full precision.
        r["greedy_agreement"] = sum(common_prefix(x, y) for x, y in zip(toks, ref)) / sum(map(len, ref))
        r["identical_requests"] = sum(x == y for x, y in zip(toks, ref))
    base = rows[0]
    print(f"\n{path} on {args.device}, KV budget {args.kv_budget_gb} GiB, torch {torch.__version__}, "
          f"{args.requests} requests x 32 new tokens; agreement = share of tokens before the first divergence from full precision "
          f"({'random weights: meaningless' if not args.model else 'trained weights'})")
    print(f"{'weights':8} {'kv':8} {'weights MiB':>11} {'KV tokens':>10} {'b1 tok/s':>9} {'b1 vs full':>10} "
          f"{'workload s':>10} {'vs full':>8} {'agree':>6} {'same req':>8}")
    for r in rows:
        print(f"{r['weights']:8} {r['kv']:8} {r['weight_mib']:11.1f} {r['kv_tokens']:10d} {r['batch1_tok_s']:9.1f} "
              f"{r['batch1_tok_s'] / base['batch1_tok_s']:9.2f}x {r['workload_s']:10.2f} "
              f"{base['workload_s'] / r['workload_s']:7.2f}x {r['greedy_agreement']:6.2f} "
              f"{r['identical_requests']:>4}/{args.requests}")
    res = {"model": path, "preset": None if args.model else args.preset, "device": args.device,
           "torch": torch.__version__, "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
           "command": " ".join(sys.argv), "kv_budget_gb": args.kv_budget_gb, "rows": rows}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
