"""GPU benchmark: our engine vs transformers on the docgen workload (shared/design/REFERENCE.md).

Unattended, one process, one table, JSON to --json. On one H100 with the defaults it builds the
Qwen2.5-Coder-7B-shaped random-weight checkpoint (bf16), then measures:
  1. engine cold start (load + KV pool + CUDA-graph capture + compile if asked),
  2. engine on the docgen workload: 100 chunks, 200-token shared system prompt, 300-600-token
     chunks, 128 new tokens, greedy, EOS ignored (after one warm-up run),
  3. transformers `generate_batch` on the same prompts (second, warm call),
  4. batch-1 decode tokens/s of the engine against the bandwidth roofline (weights / 3.0 TB/s),
  5. greedy agreement of the fast path (Triton + CUDA graphs) with the eager torch path.

    python benchmarks/gpu_docgen.py --json bench_out/gpu_docgen.json
    python benchmarks/gpu_docgen.py --preset tiny --device cpu --chunks 8   # dry run on a CPU
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
from benchmarks.workload import docgen_workload  # noqa: E402

H100_BANDWIDTH = 3.0e12  # bytes/s, measured device copy (REFERENCE.md)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device):
    """Drop a deleted engine's memory before the next model loads (KV pools are tens of GB)."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def save(res, path):
    """Written after every phase: a run killed by a timeout keeps what it measured."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        with open(path, "w") as f:
            json.dump(res, f, indent=2, default=str)


def engine_run(llm, prompts, max_new, device):
    from app.engine import SamplingParams

    sp = SamplingParams(max_tokens=max_new, ignore_eos=True)
    llm.block_manager.reset_prefix_cache()
    sync(device)
    t = time.perf_counter()
    outs = llm.generate(prompts, sp)
    sync(device)
    return time.perf_counter() - t, outs


def batch1_decode(llm, vocab, device, new_tokens=256):
    from app.engine import SamplingParams

    prompt = [3 + (i * 7919) % (vocab - 3) for i in range(32)]
    llm.generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True))  # warm
    sync(device)
    out = llm.generate([prompt], SamplingParams(max_tokens=new_tokens, ignore_eos=True))[0]
    m = out.metrics
    decode_s = m["total_time"] - m["time_to_first_token"]
    return (new_tokens - 1) / decode_s


def hf_generate_batch(path, prompts, max_new, device, dtype):
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    gc = GenerationConfig(max_new_tokens=max_new, do_sample=False, eos_token_id=-1, pad_token_id=0)
    model.generate_batch(inputs=prompts[:4], generation_config=gc)  # first call: warm-up
    sync(device)
    t = time.perf_counter()
    model.generate_batch(inputs=prompts, generation_config=gc)
    sync(device)
    dt = time.perf_counter() - t
    del model
    free(device)
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="qwen2.5-coder-7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--chunks", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--max-num-batched-tokens", type=int, default=16384)
    ap.add_argument("--compile", action="store_true", help="enable_compilation in the engine")
    ap.add_argument("--skip-hf", action="store_true", help="skip transformers generate_batch")
    ap.add_argument("--agreement-prompts", type=int, default=8)
    ap.add_argument("--workdir", default=None, help="where to write the random checkpoint")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu --preset tiny for a dry run")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    from app.engine import LLM
    from app.engine.random_checkpoint import build_checkpoint

    res = {"preset": args.preset, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
           "command": " ".join(sys.argv), "chunks": args.chunks, "max_new_tokens": args.max_new_tokens}
    try:
        import transformers
        import triton

        res.update(transformers=transformers.__version__, triton=triton.__version__)
    except ImportError:
        pass
    workdir = args.workdir or tempfile.mkdtemp(prefix="gpu_docgen_")
    t = time.perf_counter()
    path = build_checkpoint(workdir, args.preset, dtype=dtype, device=str(device) if device.type == "cuda" else "cpu")
    res["checkpoint_build_s"] = time.perf_counter() - t
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    wl = docgen_workload(args.chunks, cfg.vocab_size, max_new_tokens=args.max_new_tokens)
    res["prompt_tokens"] = wl.prompt_tokens

    t = time.perf_counter()
    llm = LLM(str(path), device=str(device), max_num_seqs=max(args.chunks, 8),
              max_num_batched_tokens=args.max_num_batched_tokens, enable_compilation=args.compile)
    sync(device)
    res["engine_cold_start_s"] = time.perf_counter() - t
    res["engine_load_report"] = {k: v for k, v in llm.load_report.items() if k != "quantization"}
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.runner.model.parameters())
    res["weight_bytes"] = weight_bytes

    t = time.perf_counter()
    engine_run(llm, wl.prompts[: min(8, args.chunks)], 16, device)  # warm-up (autotune, allocator)
    res["engine_warmup_s"] = time.perf_counter() - t
    dt, outs = engine_run(llm, wl.prompts, wl.max_new_tokens, device)
    res["engine_s"] = dt
    res["engine_stats"] = llm.stats
    res["engine_gen_tok_s"] = args.chunks * wl.max_new_tokens / dt
    res["batch1_decode_tok_s"] = batch1_decode(llm, cfg.vocab_size, device)
    if device.type == "cuda":
        res["batch1_roofline_tok_s"] = H100_BANDWIDTH / weight_bytes
        res["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    save(res, args.json)

    # Fast path vs the eager torch reference path on the same weights.
    n = min(args.agreement_prompts, args.chunks)
    k = min(32, wl.max_new_tokens)
    fast = [o.token_ids[:k] for o in outs[:n]]
    del llm
    free(device)
    ref_llm = LLM(str(path), device=str(device), enforce_eager=True, attention_backend="torch_ref",
                  max_num_seqs=max(n, 8), kv_cache_memory_gb=4 if device.type == "cuda" else None)
    _, ref_outs = engine_run(ref_llm, wl.prompts[:n], k, device)
    same = sum(a == o.token_ids for a, o in zip(fast, ref_outs))
    pos = [sum(x == y for x, y in zip(a, o.token_ids)) / len(a) for a, o in zip(fast, ref_outs)]
    res["fast_vs_eager_identical"] = f"{same}/{n}"
    res["fast_vs_eager_token_agreement"] = sum(pos) / len(pos)
    del ref_llm
    if device.type == "cuda":
        torch.cuda.empty_cache()

    if not args.skip_hf:
        res["hf_generate_batch_s"] = hf_generate_batch(str(path), wl.prompts, wl.max_new_tokens, device, dtype)

    print_table(res, args)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=str)
    return res


def print_table(res, args):
    c = args.chunks
    print(f"\ndocgen workload: {c} chunks, {res['prompt_tokens']} prompt tokens, {args.max_new_tokens} new tokens "
          f"each, preset {res['preset']}, {res['device']}, torch {res['torch']}")
    print(f"{'system':44} {'total s':>9} {'s/chunk':>9} {'gen tok/s':>10}")
    rows = [("engine (ours)", res["engine_s"])]
    if "hf_generate_batch_s" in res:
        rows.append(("transformers generate_batch (warm)", res["hf_generate_batch_s"]))
    for name, s in rows:
        print(f"{name:44} {s:9.2f} {s / c:9.3f} {c * args.max_new_tokens / s:10.0f}")
    if "hf_generate_batch_s" in res:
        print(f"speedup vs generate_batch: {res['hf_generate_batch_s'] / res['engine_s']:.1f}x")
    line = f"batch-1 decode: {res['batch1_decode_tok_s']:.1f} tok/s"
    if "batch1_roofline_tok_s" in res:
        line += f" ({res['batch1_decode_tok_s'] / res['batch1_roofline_tok_s']:.0%} of the {res['batch1_roofline_tok_s']:.0f} tok/s roofline)"
    print(line)
    print(f"cold start {res['engine_cold_start_s']:.1f} s, warm-up {res['engine_warmup_s']:.1f} s; "
          f"fast path vs eager torch path: {res['fast_vs_eager_identical']} identical "
          f"({res['fast_vs_eager_token_agreement']:.0%} of tokens)")


if __name__ == "__main__":
    main()
