"""torch.profiler view of the decode loop, with and without async scheduling (overlapped steps).

For each mode: a batch of requests is prefilled, then
  1. `--steps` pure-decode steps run under torch.profiler; the device-busy fraction is the union
     of the device kernels' time intervals over the loop's wall time (1.0 = the device never
     waited for the host). The profiler's own overhead lowers it a little; both modes pay it.
  2. the same number of steps run without the profiler: wall ms per step (the honest speed).
  3. one decode step is recorded alone and written as a Chrome trace (chrome://tracing, Perfetto).
  4. on CUDA, torch.cuda.set_sync_debug_mode("warn") counts the host syncs torch reports per
     decode step (async scheduling should leave one: the sampled-token event's wait, which torch
     does not flag, so 0 is expected; plain steps show the .tolist() of sampling).

    python benchmarks/decode_profile.py --model /path/to/Qwen2.5-Coder-7B --out bench_out/profile
    python benchmarks/decode_profile.py --preset qwen2.5-coder-7b --out bench_out/profile  # random weights
    python benchmarks/decode_profile.py --dry-run --out /tmp/prof   # CPU, tiny random model

--dry-run runs the same code on the CPU with a tiny random checkpoint: the CPU has no device
kernels, so "device_busy_fraction" is null there and "forward_fraction" (time inside the model's
forward over loop time, a host-side analogue) is given instead. The JSON has the same keys.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def union_us(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end) intervals."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def device_busy(prof, window: tuple[float, float]) -> float | None:
    """Fraction of `window` (us, profiler clock) covered by device kernels, or None on the CPU."""
    from torch.autograd import DeviceType

    kernels = [(e.time_range.start, e.time_range.end) for e in prof.events()
               if e.device_type == DeviceType.CUDA and e.time_range.end > window[0] and e.time_range.start < window[1]]
    if not kernels:
        return None
    clipped = [(max(s, window[0]), min(e, window[1])) for s, e in kernels]
    return union_us(clipped) / (window[1] - window[0])


def loop_window(prof, name: str) -> tuple[float, float]:
    from torch.autograd import DeviceType

    ev = [e for e in prof.events() if e.name == name and e.device_type == DeviceType.CPU]
    assert ev, f"no {name!r} range in the profile"
    return ev[0].time_range.start, ev[0].time_range.end


def prefilled_engine(path: str, async_on: bool, args):
    """An engine whose `batch` requests have all finished their prefill (pure decode from here)."""
    from app.engine import LLM, SamplingParams

    kw = dict(max_num_seqs=args.batch, async_scheduling=async_on)
    if args.dry_run:
        kw.update(device="cpu", kv_cache_memory_gb=0.25)
    else:  # room for a second engine while the first one's memory is being returned
        kw.update(gpu_memory_utilization=0.45)
    llm = LLM(path, **kw)
    g = torch.Generator().manual_seed(0)
    vocab = llm.runner.model.spec.vocab_size
    sp = SamplingParams(max_tokens=args.warmup + 3 * args.steps + 8, ignore_eos=True)
    for _ in range(args.batch):
        llm.add_request(torch.randint(3, min(vocab, 30000), (args.prompt_len,), generator=g).tolist(), sp)
    while any(s.num_output_tokens == 0 for s in llm.scheduler.running) or llm.scheduler.waiting:
        llm.step()
    for _ in range(args.warmup):
        llm.step()
    return llm


def sync(llm) -> None:
    if llm.device.type == "cuda":
        torch.cuda.synchronize(llm.device)


def profile_mode(path: str, async_on: bool, args, out_dir: str) -> dict:
    from torch.profiler import ProfilerActivity, profile, record_function

    llm = prefilled_engine(path, async_on, args)
    cuda = llm.device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    runner, real, fwd = llm.runner, llm.runner.forward, [0.0]  # the runner's: lean or module path

    def timed_forward(*a, **kw):  # host time inside the forward (the CPU analogue of busy time)
        t = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            fwd[0] += time.perf_counter() - t

    runner.forward = timed_forward
    sync(llm)
    with profile(activities=acts) as prof:
        with record_function("decode_loop"):
            t0, f0 = time.perf_counter(), fwd[0]
            for _ in range(args.steps):
                llm.step()
            sync(llm)
            loop_s, fwd_s = time.perf_counter() - t0, fwd[0] - f0
    del runner.forward  # back to the class's forward (no instance attribute, no reference cycle)
    busy = device_busy(prof, loop_window(prof, "decode_loop"))
    sync(llm)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        llm.step()
    sync(llm)
    step_ms = (time.perf_counter() - t0) / args.steps * 1e3
    syncs = None
    if cuda:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(args.steps):
                    llm.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message) for w in caught) / args.steps
    sync(llm)
    trace = os.path.join(out_dir, f"decode_step_async_{'on' if async_on else 'off'}.json")
    with profile(activities=acts) as one:
        with record_function("decode_step"):
            llm.step()
            sync(llm)
    one.export_chrome_trace(trace)
    return {"async_scheduling": llm.async_scheduling, "reason": llm.load_report.async_scheduling["reason"],
            "batch": len(llm.scheduler.running), "steps": args.steps, "step_ms": step_ms,
            "profiled_step_ms": loop_s / args.steps * 1e3,
            "device_busy_fraction": busy, "forward_fraction": fwd_s / loop_s,
            "host_syncs_per_step": syncs, "trace": trace,
            "cuda_graphs": (llm.load_report.cuda_graphs or {}).get("active")}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint dir or hub id")
    ap.add_argument("--preset", help="build a random checkpoint of this shape (benchmarks.random_checkpoint; "
                                     "default with --dry-run: tiny); deleted afterwards")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 with --dry-run)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny random checkpoint")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default="bench_out/decode_profile")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.threads or args.dry_run:
        torch.set_num_threads(args.threads or 1)
    if args.dry_run:
        args.prompt_len = min(args.prompt_len, 64)
    path, built = args.model, None
    if not path and (args.preset or args.dry_run):
        from benchmarks.random_checkpoint import build_checkpoint

        cuda = torch.cuda.is_available() and not args.dry_run
        built = tempfile.mkdtemp(prefix="decode_profile_")
        path = str(build_checkpoint(built, args.preset or "tiny", dtype=torch.bfloat16 if cuda else torch.float32,
                                    device="cuda" if cuda else "cpu"))
        if cuda:
            torch.cuda.empty_cache()
    if not path:
        ap.error("give --model or --preset (or --dry-run)")
    try:
        return _run(path, args)
    finally:
        if built:
            shutil.rmtree(built, ignore_errors=True)


def _run(path: str, args) -> dict:
    res = {"model": path, "dry_run": args.dry_run, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.dry_run else "cpu",
           "command": " ".join(sys.argv), "modes": {}}
    for on in (False, True):
        key = "async_on" if on else "async_off"
        try:
            res["modes"][key] = profile_mode(path, on, args, args.out)
        except Exception as e:  # one mode failing must not lose the other's numbers
            res["modes"][key] = {"error": f"{type(e).__name__}: {e}"}
        gc.collect()  # the engine of this mode (its KV pool) goes before the next one is built
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        with open(os.path.join(args.out, "decode_profile.json"), "w") as f:
            json.dump(res, f, indent=2)
    for key, m in res["modes"].items():
        if "error" in m:
            print(f"{key}: FAILED {m['error']}")
            continue
        busy = "n/a (CPU)" if m["device_busy_fraction"] is None else f"{m['device_busy_fraction']:.1%}"
        print(f"{key}: {m['step_ms']:.2f} ms/step at batch {m['batch']}, device busy {busy}, "
              f"forward {m['forward_fraction']:.0%} of loop, syncs/step {m['host_syncs_per_step']}, trace {m['trace']}")
    return res


if __name__ == "__main__":
    main()
