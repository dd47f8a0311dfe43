"""Batch-1 and small-batch CPU decode: tokens/s, prompt time, and where a decode step's time goes.

For each weight format (4bit, 8bit, bf16, fp32) on one checkpoint, an engine on the CPU:
  - prompt: seconds to prefill one `--prompt-len`-token prompt (max_tokens=1, prefix cache reset);
  - decode: tokens/s of `--steps` pure-decode steps at each `--batch` (requests prefilled first);
  - with --profile: one torch.profiler run of the batch-1 decode steps, its self CPU time split
    into matmul / dtype conversions / attention / other ops, and the rest of the step's wall time
    ("python": scheduler, metadata, sampling bookkeeping outside any aten op).
`--rounds 2` repeats every configuration in turn (A B C A B C) so a machine loaded by others
shows up as spread instead of as a difference between configurations. Each time is also given in
this process's CPU seconds (time.process_time): with --threads 1 on a machine loaded by other jobs
that is the steadier measure of the work done (wall time includes waiting for a core).

    python benchmarks/cpu_decode.py --preset cpu-31m --formats 4bit,8bit,bf16,fp32 --threads 1
    python benchmarks/cpu_decode.py --model /tmp/q15b --formats 4bit --batch 1 --profile
    python benchmarks/cpu_decode.py --dry-run          # tiny random model, seconds

--code DIR imports `app` from another checkout (e.g. the previous commit, to compare before and
after in one run: `git archive HEAD~3 | tar -x -C /tmp/base`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

_CODE = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--code=")), None)
sys.path.insert(0, _CODE or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# aten op name -> category (self CPU time). Anything else is "other ops".
MATMUL = ("aten::_weight_int4pack_mm_for_cpu", "aten::_weight_int8pack_mm", "aten::mm", "aten::addmm",
          "aten::bmm", "aten::linear", "aten::matmul", "aten::_weight_int4pack_mm")
CONVERT = ("aten::to", "aten::_to_copy", "aten::copy_", "aten::contiguous", "aten::clone")
ATTENTION = ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
             "aten::_scaled_dot_product_attention_math", "aten::index_put_", "aten::index_select")


def engine(path: str, fmt: str, args):
    from app.engine import LLM

    fmt, _, kernel = fmt.partition(":")  # "4bit:torch" = 4bit with EngineConfig.cpu_kernels="torch"
    quant = fmt if fmt in ("4bit", "8bit") else None
    dtype = "bfloat16" if fmt == "bf16" else "float32"
    extra = {"quant_lm_head": args.lm_head} if args.lm_head != "auto" else {}  # (older checkouts lack it)
    if (kernel or args.cpu_kernel) != "auto":
        extra["cpu_kernels"] = kernel or args.cpu_kernel
    return LLM(path, device="cpu", quantization=quant, dtype=dtype, max_num_seqs=max(args.batch), **extra,
               kv_cache_memory_gb=args.kv_gb, max_model_len=args.prompt_len + 3 * args.steps + 64,
               quant_cache_dir=args.quant_cache, enable_compilation=args.compile)


def _prompt(vocab: int, n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, min(vocab, 30000), (n,), generator=g).tolist()


def prompt_seconds(llm, args) -> tuple[float, float]:
    """-> (wall seconds, this process's CPU seconds) to prefill one prompt."""
    from app.engine import SamplingParams

    llm.block_manager.reset_prefix_cache()
    p = _prompt(llm.runner.model.spec.vocab_size, args.prompt_len, 1)
    t, c = time.perf_counter(), time.process_time()
    llm.generate([p], SamplingParams(max_tokens=1, ignore_eos=True))
    return time.perf_counter() - t, time.process_time() - c


def prefill(llm, batch: int, args) -> list[str]:
    from app.engine import SamplingParams

    vocab = llm.runner.model.spec.vocab_size
    sp = SamplingParams(max_tokens=3 * args.steps + 16, ignore_eos=True)
    ids = [llm.add_request(_prompt(vocab, 32, 100 + i), sp) for i in range(batch)]
    while llm.scheduler.waiting or any(s.num_output_tokens == 0 for s in llm.scheduler.running):
        llm.step()
    for _ in range(2):
        llm.step()
    return ids


def finish(llm, ids) -> None:
    for i in ids:
        llm.abort(i)
    while llm.has_unfinished():
        llm.step()


def decode_tok_s(llm, batch: int, args) -> tuple[float, float]:
    """-> (tokens/s of wall time, tokens per CPU second of this process) over `steps` decode steps."""
    ids = prefill(llm, batch, args)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        llm.step()
    n = batch * args.steps
    rates = n / (time.perf_counter() - t), n / max(time.process_time() - c, 1e-9)
    finish(llm, ids)
    return rates


def categorize(prof) -> dict:
    cats = {"matmul": 0.0, "convert": 0.0, "attention": 0.0, "other_ops": 0.0}
    top = []
    for e in prof.key_averages():
        if not e.key.startswith("aten::"):
            continue
        us = e.self_cpu_time_total
        top.append((us, e.key, e.count))
        cat = ("matmul" if e.key in MATMUL else "convert" if e.key in CONVERT
               else "attention" if e.key in ATTENTION else "other_ops")
        cats[cat] += us
    top.sort(reverse=True)
    return cats, [(k, round(us / 1e3, 2), n) for us, k, n in top[:12]]


def profile_decode(llm, args) -> dict:
    from torch.profiler import ProfilerActivity, profile

    ids = prefill(llm, 1, args)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(args.steps):
            llm.step()
        wall_us = (time.perf_counter() - t) * 1e6
    finish(llm, ids)
    cats, top = categorize(prof)
    ops = sum(cats.values())
    per_step = {k: v / args.steps / 1e3 for k, v in cats.items()}
    per_step["python"] = max(wall_us - ops, 0.0) / args.steps / 1e3
    counts = {k: sum(e.count for e in prof.key_averages() if e.key in names) / args.steps
              for k, names in (("convert_calls", ("aten::_to_copy",)), ("matmul_calls", MATMUL))}
    return {"ms_per_step": {k: round(v, 3) for k, v in per_step.items()},
            "profiled_step_ms": round(wall_us / args.steps / 1e3, 3), **counts, "top_ops_ms_total": top}


def measure(path: str, fmt: str, args) -> dict:
    llm = engine(path, fmt, args)
    prompt_seconds(llm, args)  # warm-up (first-call allocations)
    from app.engine.quant import weight_bytes

    row = dict(zip(("prompt_s", "prompt_cpu_s"), prompt_seconds(llm, args)), format=fmt,
               weight_mib=weight_bytes(llm.runner.model) / 2**20)
    for b in args.batch:
        row[f"tok_s_b{b}"], row[f"cpu_tok_s_b{b}"] = decode_tok_s(llm, b, args)
    if args.profile:
        row["profile_b1"] = profile_decode(llm, args)
    del llm
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint dir")
    ap.add_argument("--preset", help="random checkpoint of this shape (benchmarks.random_checkpoint), temporary")
    ap.add_argument("--dry-run", action="store_true", help="tiny random model, few steps")
    ap.add_argument("--formats", default="4bit,8bit,bf16,fp32",
                    help="comma-separated; FORMAT:KERNEL sets cpu_kernels for one entry (4bit:torch)")
    ap.add_argument("--batch", default="1,8", help="comma-separated decode batch sizes")
    ap.add_argument("--prompt-len", type=int, default=271)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--kv-gb", type=float, default=0.25)
    ap.add_argument("--quant-cache", default="", help="quantized-weights cache dir ('' = none)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--lm-head", default="auto", help="EngineConfig.quant_lm_head (auto | 8bit | dense)")
    ap.add_argument("--cpu-kernel", default="auto", help="EngineConfig.cpu_kernels (auto | torch | vnni)")
    ap.add_argument("--compile", action="store_true", help="EngineConfig.enable_compilation (app/engine/compile.py)")
    ap.add_argument("--code", help="import app from this checkout (--code=DIR)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    args.batch = [int(b) for b in args.batch.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    path, tmp = args.model, None
    if args.dry_run:
        args.prompt_len, args.steps = min(args.prompt_len, 40), min(args.steps, 4)
    if not path:
        from benchmarks.random_checkpoint import build_checkpoint

        tmp = tempfile.TemporaryDirectory(prefix="cpu_decode_")
        path = str(build_checkpoint(tmp.name, args.preset or "tiny"))
    import app

    res = {"model": path, "torch": torch.__version__, "threads": torch.get_num_threads(), "code": app.__file__,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv), "rows": []}
    for r in range(args.rounds):
        for fmt in args.formats.split(","):
            row = {"round": r, **measure(path, fmt, args)}
            res["rows"].append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    fmts = args.formats.split(",")
    print(f"\ntorch {torch.__version__}, {res['threads']} threads, code {os.path.dirname(app.__file__)}")
    for fmt in fmts:
        rows = [x for x in res["rows"] if x["format"] == fmt]
        med = lambda key: statistics.median(x[key] for x in rows)  # noqa: E731
        cells = [f"prompt {med('prompt_s'):.3f} s (cpu {med('prompt_cpu_s'):.3f} s)"]
        cells += [f"b{b} {med(f'tok_s_b{b}'):.1f} tok/s (per cpu-s {med(f'cpu_tok_s_b{b}'):.1f})" for b in args.batch]
        print(f"{fmt:>5}: " + ", ".join(cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    if tmp:
        tmp.cleanup()
    return res


if __name__ == "__main__":
    main()
