"""Step-loop overhead with and without async scheduling (the overlapped step loop), on the CPU.

Per pure-decode step (every running request decodes one token): wall time of `LLM.step()`, time
inside the model's forward, and the difference, i.e. what the loop costs around the forward
(scheduling, input preparation, sampling, applying tokens, stop checks). On the CPU the forward
is synchronous, so async scheduling cannot hide anything there: this measures what its extra
bookkeeping costs, and checks that greedy outputs are identical. On a GPU use
benchmarks/decode_profile.py (device-busy fraction of the decode loop).

    python benchmarks/step_loop_cpu.py --batch 32 --json bench_out/step_loop_cpu.json
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


def _timed_forward(llm, acc: list[float]) -> None:
    """Accumulate time spent in the model's forward (wrapping the runner's forward: the lean or the
    module path, whichever runs the step)."""
    model = llm.runner
    real = model.forward

    def forward(*a, **kw):
        t = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            acc[0] += time.perf_counter() - t

    model.forward = forward


def run_once(llm, prompts, max_new: int):
    from app.engine import SamplingParams

    fwd = [0.0]
    _timed_forward(llm, fwd)
    ids = [llm.add_request(p, SamplingParams(max_tokens=max_new, ignore_eos=True)) for p in prompts]
    outs, decode = {}, []  # decode: (step seconds, forward seconds) of pure-decode steps
    while llm.has_unfinished():
        before, f0, t = llm.stats["computed_tokens"], fwd[0], time.perf_counter()
        running = len(llm.scheduler.running)
        done = llm.step()
        dt = time.perf_counter() - t
        if llm.stats["computed_tokens"] - before == running == len(prompts):
            decode.append((dt, fwd[0] - f0))
        for o in done:
            outs[o.request_id] = o
    llm.step()  # drop a step computed ahead (async scheduling), outside the timings
    del llm.runner.forward
    return [outs[i].token_ids for i in ids], decode


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from app.engine import LLM
    from benchmarks.random_checkpoint import build_checkpoint

    path = build_checkpoint(tempfile.mkdtemp(prefix="step_loop_"), args.preset)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 500, (args.prompt_len,), generator=g).tolist() for _ in range(args.batch)]
    engines = {m: LLM(str(path), max_num_seqs=args.batch, async_scheduling=m, kv_cache_memory_gb=0.25)
               for m in (False, True)}
    for llm in engines.values():
        run_once(llm, prompts[:2], 3)  # warm-up
    tokens, rows = {}, {m: [] for m in engines}
    for _ in range(args.repeats):  # interleaved, so load from other jobs hits both modes alike
        for m, llm in engines.items():
            llm.block_manager.reset_prefix_cache()
            tokens[m], decode = run_once(llm, prompts, args.max_new_tokens)
            rows[m].extend(decode)
    res = {"preset": args.preset, "batch": args.batch, "prompt_len": args.prompt_len,
           "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "threads": args.threads,
           "torch": torch.__version__, "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
           "identical_greedy": tokens[True] == tokens[False]}
    print(f"preset {args.preset}, batch {args.batch}, {args.threads} thread(s); per pure-decode step (median):")
    for m, r in rows.items():
        step = statistics.median(s for s, _ in r) * 1e3
        fwd = statistics.median(f for _, f in r) * 1e3
        over = statistics.median(s - f for s, f in r) * 1e3
        name = "async_scheduling=" + str(m)
        res[name] = {"decode_steps": len(r), "step_ms": step, "forward_ms": fwd, "loop_overhead_ms": over}
        print(f"  {name:24} step {step:7.2f} ms  forward {fwd:7.2f} ms  loop overhead {over:6.2f} ms "
              f"({len(r)} steps)")
    print(f"identical greedy outputs: {res['identical_greedy']}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
