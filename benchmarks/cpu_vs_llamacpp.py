"""Our engine side by side with llama.cpp on the CPU: same checkpoint, same token-id prompts.

    LLAMA_CPP_DIR=... [LLAMA_CPP_BIN=...] python benchmarks/cpu_vs_llamacpp.py --preset cpu-31m \
        --pairs f32,q8_0,q4_0 --requests 32 --max-new-tokens 64 --json bench_out/vs_llamacpp.json

Builds a random-weight checkpoint of --preset (or takes --model), converts it with llama.cpp's own
`convert_hf_to_gguf.py` (benchmarks/llamacpp_convert.py maps the local tokenizer's pre-tokenizer to
Qwen2's at runtime) and `llama-quantize`, then per precision pair starts our engine (a child
process, benchmarks/llamacpp_ours.py) and `llama-server` (loopback, continuous batching, one slot
per request, prompt cache, --threads both sides) and alternates them, round by round:
  1. the docgen workload: --requests prompts (100-token shared prefix + 150-300-token chunk), all
     at once, each --max-new-tokens greedy tokens with EOS ignored;
  2. batch 1: one such prompt, --decode-tokens tokens: prompt processing and decode rates.
Each round draws new prompts (same for both sides), so no side reuses a previous round's cache.
Peak RSS is each process's VmHWM. Prints one table; writes --json after every measurement.
Precision pairs (llama.cpp / ours): f32 / fp32, f16 / bf16, q8_0 / 8bit, q4_0 / 4bit.
llama.cpp is benchmark-only: see BENCHMARKS.md for how to build it.
--ours-only runs only our side (the llama.cpp columns say "not run"): no llama.cpp numbers exist then.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.checks import common_prefix  # noqa: E402
from benchmarks.llamacpp_ours import OursConfig, OursEngine  # noqa: E402
from benchmarks.llamacpp_server import (  # noqa: E402
    LlamaCpp, LlamaServer, convert_to_gguf, find_llama_cpp, llama_cpp_version, quantize_gguf,
)
from benchmarks.llamacpp_table import format_table, summarize  # noqa: E402
from benchmarks.workload import docgen_workload  # noqa: E402


@dataclass(frozen=True)
class Pair:
    gguf_type: str  # llama.cpp's side
    label: str  # ours
    quantization: str | None
    dtype: str


PAIRS = {
    "f32": Pair("f32", "fp32", None, "float32"),
    "f16": Pair("f16", "bf16", None, "bfloat16"),  # issue 14: our bf16 path against llama.cpp's f16
    "q8_0": Pair("q8_0", "8bit", "8bit", "auto"),
    "q4_0": Pair("q4_0", "4bit", "4bit", "auto"),
}
PREFIX, CHUNK_MIN, CHUNK_MAX = 100, 150, 300  # the docgen workload (benchmarks/workload.py)


def parse_pairs(text: str) -> list[Pair]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in PAIRS]
    if unknown or not names:
        raise SystemExit(f"--pairs: unknown {unknown or text!r}; choose from {', '.join(PAIRS)}")
    return [PAIRS[n] for n in names]


def gguf_for(llama: LlamaCpp, ckpt: Path, work: Path, pair: Pair, base_type: str, threads: int) -> Path:
    """The pair's GGUF: float types straight from the converter, quantized ones by llama-quantize
    from the checkpoint's own precision (base_type: f32 or bf16)."""
    if pair.gguf_type in ("f32", "f16", "bf16"):
        return convert_to_gguf(llama, ckpt, work / f"model-{pair.gguf_type}.gguf", pair.gguf_type)
    base = convert_to_gguf(llama, ckpt, work / f"model-{base_type}.gguf", base_type)
    return quantize_gguf(llama, base, work / f"model-{pair.gguf_type}.gguf", pair.gguf_type.upper(), threads)


def checkpoint(args, work: Path) -> tuple[Path, int, str]:
    """(checkpoint dir, token-id range for prompts, the checkpoint's precision as a GGUF type)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    if args.model:
        path = Path(args.model)
    else:
        from benchmarks.random_checkpoint import build_checkpoint

        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.checkpoint_dtype]
        path = work / "checkpoint"
        if not (path / "config.json").exists():
            build_checkpoint(path, args.preset, dtype=dtype)
    cfg = AutoConfig.from_pretrained(path)
    vocab = min(cfg.vocab_size, len(AutoTokenizer.from_pretrained(path)))  # ids the tokenizer knows
    ck_dtype = str(getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", "float32")).replace("torch.", "")
    return path, vocab, "bf16" if ck_dtype == "bfloat16" else "f32"


def run_pair(args, pair: Pair, ckpt: Path, vocab: int, llama: LlamaCpp | None, gguf: Path | None,
             work: Path, record) -> dict:
    """Start both sides, alternate them for --rounds rounds, return their memory."""
    name = f"{pair.gguf_type} / {pair.label}"
    slot_ctx = PREFIX + CHUNK_MAX + max(args.max_new_tokens, args.decode_tokens) + 16
    ours = OursEngine(OursConfig(str(ckpt), pair.quantization, pair.dtype, args.requests, slot_ctx, args.threads),
                      work / f"ours-{pair.gguf_type}.log")
    sides = {"ours": ours}
    info = {"ours": {"load_seconds": ours.load_seconds, "load_report": ours.load_report}}
    try:
        if llama is not None:
            server = LlamaServer(llama, gguf, args.requests, slot_ctx, args.threads, work / f"server-{pair.gguf_type}.log")
            sides["llama.cpp"] = server
            info["llama.cpp"] = {"load_seconds": server.load_seconds, "gguf": str(gguf),
                                 "gguf_bytes": gguf.stat().st_size, "cmd": server.cmd}
        # Warm-up round at full size, not in the table: our first batch of new shapes pays one-time
        # costs (allocator growth, first-use kernel setup) that llama-server pays at start-up.
        warm = docgen_workload(args.warmup_requests or args.requests, vocab, PREFIX, CHUNK_MIN, CHUNK_MAX, 4, seed=999)
        for side, eng in sides.items():
            t = time.perf_counter()
            eng.workload(warm.prompts, 4)
            eng.batch1(warm.prompts[0], 4)
            info[side]["warmup_seconds"] = time.perf_counter() - t
        for rnd in range(args.rounds):
            wl = docgen_workload(args.requests, vocab, PREFIX, CHUNK_MIN, CHUNK_MAX, args.max_new_tokens, seed=rnd)
            one = docgen_workload(1, vocab, PREFIX, CHUNK_MIN, CHUNK_MAX, args.decode_tokens, seed=1000 + rnd)
            for side, eng in sides.items():
                r = eng.workload(wl.prompts, args.max_new_tokens)
                want = args.requests * args.max_new_tokens
                if r["generated"] != want:
                    raise RuntimeError(f"{side} generated {r['generated']} tokens, expected {want}")
                record(dict(pair=name, kind="docgen", side=side, round=rnd, seconds=r["seconds"], tokens=want))
            outputs = {}
            for side, eng in sides.items():
                r = eng.batch1(one.prompts[0], args.decode_tokens)
                outputs[side] = r.get("token_ids")
                record(dict(pair=name, kind="decode", side=side, round=rnd, seconds=r["decode_s"],
                            tokens=r["decode_tokens"]))
                record(dict(pair=name, kind="prompt", side=side, round=rnd, seconds=r["prompt_s"],
                            tokens=r["prompt_tokens"]))
            if len(outputs) == 2 and None not in outputs.values():
                # the tiny presets (top logits well apart) must agree throughout; near-uniform
                # random weights (the large presets) pick different ties early
                info.setdefault("batch1_same_tokens", []).append(common_prefix(*outputs.values()))
        for side, eng in sides.items():
            info[side].update(eng.memory())
    finally:
        for eng in sides.values():
            eng.close()
    return info


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a local HF checkpoint (default: a random-weight --preset)")
    ap.add_argument("--preset", default="cpu-31m")
    ap.add_argument("--checkpoint-dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--pairs", default="f32,q8_0,q4_0", help=f"comma-separated, from {', '.join(PAIRS)}")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--decode-tokens", type=int, default=64, help="batch-1 generated tokens")
    ap.add_argument("--rounds", type=int, default=2, help="alternated rounds (ours, llama.cpp) per pair")
    ap.add_argument("--warmup-requests", type=int, default=None,
                    help="requests of the unrecorded warm-up round (default --requests; fewer saves time on big models)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="checkpoint, GGUFs and logs (default: a temp dir, deleted)")
    ap.add_argument("--ours-only", action="store_true", help="no llama.cpp: only our side's numbers")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    pairs = parse_pairs(args.pairs)
    llama = None if args.ours_only else find_llama_cpp()  # fails here, before any work, if missing
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vs_llamacpp_"))
    work.mkdir(parents=True, exist_ok=True)
    import torch

    res = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "torch": torch.__version__,
           "llama_cpp": llama_cpp_version(llama) if llama else None, "args": vars(args),
           "measurements": [], "processes": {}}

    def save():
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(res, indent=2, default=str))

    def record(m):
        res["measurements"].append(m)
        print(f"  {m['pair']:12} {m['kind']:7} {m['side']:9} round {m['round']}: {m['tokens'] / m['seconds']:8.1f} tok/s "
              f"({m['seconds']:.2f} s)", flush=True)
        save()

    try:
        ckpt, vocab, base_type = checkpoint(args, work)
        for pair in pairs:
            gguf = None if llama is None else gguf_for(llama, ckpt, work, pair, base_type, args.threads)
            info = run_pair(args, pair, ckpt, vocab, llama, gguf, work, record)
            res["processes"][f"{pair.gguf_type} / {pair.label}"] = info
            save()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    rows = summarize(res["measurements"], res["processes"])
    table = format_table(rows, f"{args.requests}x{args.max_new_tokens}")
    res["table"] = table
    save()
    print(f"\n{args.model or args.preset}, {args.threads} threads, {args.rounds} alternated rounds; "
          f"llama.cpp: {res['llama_cpp'] or 'not run (--ours-only)'}\n{table}")
    for name, info in res["processes"].items():
        if "batch1_same_tokens" in info:
            print(f"{name}: batch-1 greedy tokens equal before the first difference, per round: "
                  f"{info['batch1_same_tokens']} of {args.decode_tokens}")
    return res


if __name__ == "__main__":
    main()
