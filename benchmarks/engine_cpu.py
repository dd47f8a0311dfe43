"""CPU benchmark of the engine on the docgen workload, scaled for a small machine.

Runs in one process, same checkpoint and prompts:
  (a) transformers `generate`, one request at a time (measured on --hf-serial requests, per-request
      time extrapolated),
  (b) transformers `generate_batch` (its continuous batching), all requests,
  (c) our engine, all requests,
and prints tokens/s, ratios, and how close the engine gets to this machine's compute limit
(measured fp32 matmul rate x the workload's FLOPs after sharing the system prompt).

    python benchmarks/engine_cpu.py --json bench_out/engine_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.workload import decoder_flops_per_token, docgen_workload  # noqa: E402


def matmul_gflops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def run_hf_serial(model, wl, n):
    t = time.perf_counter()
    outs = []
    for p in wl.prompts[:n]:
        with torch.no_grad():
            o = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                               max_new_tokens=wl.max_new_tokens, min_new_tokens=wl.max_new_tokens, do_sample=False)
        outs.append(o[0, len(p):].tolist())
    return (time.perf_counter() - t) / n, outs


def run_hf_batch(model, wl):
    from transformers import GenerationConfig

    gc = GenerationConfig(max_new_tokens=wl.max_new_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
    model.generate_batch(inputs=wl.prompts[:2], generation_config=gc)  # warm-up call
    t = time.perf_counter()
    model.generate_batch(inputs=wl.prompts, generation_config=gc)
    return (time.perf_counter() - t) / len(wl.prompts)


def run_engine(path, wl, args):
    from app.engine import LLM, SamplingParams

    llm = LLM(str(path), max_num_batched_tokens=args.max_batched_tokens, block_size=16)
    sp = SamplingParams(max_tokens=wl.max_new_tokens, ignore_eos=True)
    llm.generate([wl.prompts[0][:50]], SamplingParams(max_tokens=2))  # warm-up
    llm.block_manager.reset_prefix_cache()
    t = time.perf_counter()
    outs = llm.generate(wl.prompts, sp)
    dt = time.perf_counter() - t
    return dt / len(wl.prompts), outs, llm.stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-31m")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--prefix", type=int, default=100)
    ap.add_argument("--chunk-min", type=int, default=150)
    ap.add_argument("--chunk-max", type=int, default=300)
    ap.add_argument("--hf-serial", type=int, default=4, help="requests measured one at a time")
    ap.add_argument("--max-batched-tokens", type=int, default=2048)
    ap.add_argument("--skip-hf-batch", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from transformers import AutoConfig, AutoModelForCausalLM

    from benchmarks.random_checkpoint import build_checkpoint

    torch.manual_seed(0)
    tmp = tempfile.mkdtemp(prefix="engine_cpu_")
    path = build_checkpoint(tmp, args.preset)
    cfg = AutoConfig.from_pretrained(path)
    wl = docgen_workload(args.requests, cfg.vocab_size, args.prefix, args.chunk_min, args.chunk_max,
                         args.max_new_tokens)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    res = {"preset": args.preset, "requests": args.requests, "max_new_tokens": args.max_new_tokens,
           "prompt_tokens": wl.prompt_tokens, "torch": torch.__version__, "python": platform.python_version(),
           "cpu_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    import transformers

    res["transformers"] = transformers.__version__
    res["matmul_gflops"] = matmul_gflops()
    eng_s, eng_outs, stats = run_engine(path, wl, args)
    res["engine_s_per_req"] = eng_s
    res["engine_stats"] = stats
    serial_s, serial_outs = run_hf_serial(hf, wl, args.hf_serial)
    res["hf_serial_s_per_req"] = serial_s
    res["identical_to_hf_serial"] = sum(o.token_ids == r for o, r in zip(eng_outs, serial_outs))
    if not args.skip_hf_batch:
        res["hf_batch_s_per_req"] = run_hf_batch(hf, wl)
    gen = args.requests * args.max_new_tokens
    computed = wl.prompt_tokens - (args.requests - 1) * (args.prefix // 16 * 16) + gen
    floor = computed * decoder_flops_per_token(cfg) / (res["matmul_gflops"] * 1e9) / args.requests
    res["compute_floor_s_per_req"] = floor

    rows = [("transformers generate, one at a time", serial_s),
            ("transformers generate_batch", res.get("hf_batch_s_per_req")),
            ("engine (ours)", eng_s), ("compute floor (matmul rate x FLOPs)", floor)]
    print(f"\nCPU docgen workload: {args.requests} requests, {args.prefix}-token shared prefix, "
          f"{args.chunk_min}-{args.chunk_max}-token chunks, {args.max_new_tokens} new tokens, preset {args.preset}")
    print(f"{'system':42} {'s/request':>10} {'gen tok/s':>10} {'engine speedup':>15}")
    for name, s in rows:
        if s is None:
            continue
        print(f"{name:42} {s:10.3f} {args.max_new_tokens / s:10.1f} {s / eng_s:14.2f}x")
    print(f"engine reaches {floor / eng_s:.0%} of the compute limit; identical greedy outputs vs HF serial: "
          f"{res['identical_to_hf_serial']}/{args.hf_serial}")
    print(f"prefix-cache hit tokens {stats['prefix_cache_hit_tokens']}, steps {stats['steps']}, "
          f"mean seqs/step {stats['mean_seqs_per_step']:.1f}, matmul {res['matmul_gflops']:.0f} GFLOP/s")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
