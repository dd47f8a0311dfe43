"""Micro-benchmark of the quantized linear paths: ms per matmul for several M (tokens per call).

    .venv/bin/python benchmarks/quant_kernels.py [--n 1024 --k 1024] [--device cpu|cuda] [--json out.json]

Rows are the layer paths the engine can run: dense (fp32 / bf16 F.linear), int4 through the packed
kernel (activations cast to bf16, or fp32), int4 dequantize + dense matmul (the large-M path), int8
likewise, and fp8 _scaled_mm on CUDA. The crossover M (where dense beats the packed kernel) sets
support.default_dense_min_m. Timings are the fastest of 5 repeats (the dev machine is shared; contention only adds time).
Each path is built and timed as its own phase in a child process (benchmarks/isolate.py: a CUDA error
costs only that path) and the JSON is rewritten after each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.engine.quant import Fp8Linear, Int4Linear, Int8Linear, supported_formats  # noqa: E402
from benchmarks.isolate import child_main, run_isolated  # noqa: E402


_MIN_S = 0.2


def _time_ms(fn, device, min_s=None, reps=5):
    min_s = _MIN_S if min_s is None else min_s
    fn()
    fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    one = max(time.perf_counter() - t0, 1e-6)
    inner = max(1, int(min_s / reps / one))
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / inner * 1e3)
    return min(samples)  # the least-disturbed repeat: the machine is shared


def build_paths(n, k, device, act_dtype):
    """{path name: factory() -> (input dtype, layer fn)}; each path is built inside its own phase."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=False, device=device, dtype=torch.float32)
    w32 = lin.weight.detach()
    paths = {
        "dense fp32": lambda: (torch.float32, lambda x: F.linear(x, w32)),
        "dense bf16": lambda: (torch.bfloat16, partial(F.linear, weight=w32.to(torch.bfloat16))),
    }
    sup = supported_formats(device)
    if sup["4bit"] is None:
        for tag, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            if device.type == "cuda" and dt != torch.bfloat16:
                continue
            # dense_min_m huge: never dense, but keeps the portable levels so the reference is independent
            paths[f"int4 kernel ({tag} act)"] = partial(
                lambda dt: (act_dtype, Int4Linear.from_linear(lin, 128, dense_min_m=10**9, cpu_compute_dtype=dt)), dt)
        # dense matmul in bf16 (the kernel dtype)
        paths["int4 dequant+dense (bf16)"] = lambda: (act_dtype, Int4Linear.from_linear(lin, 128, dense_min_m=1))
    if sup["8bit"] is None:
        if device.type == "cpu":
            for tag, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
                paths[f"int8 kernel ({tag} act)"] = partial(
                    lambda dt: (act_dtype, Int8Linear.from_linear(lin, dense_min_m=10**9, cpu_compute_dtype=dt)), dt)
        paths["int8 dequant+dense (bf16)"] = lambda: (act_dtype, Int8Linear.from_linear(lin, dense_min_m=1))
    if sup["fp8"] is None:
        paths["fp8 _scaled_mm (incl. x cast)"] = lambda: (torch.bfloat16, Fp8Linear.from_linear(lin))
    return paths


def run_path(factory, k, ms, device, act) -> dict:
    """ms per matmul for each M, and (quantized paths) max |y - reference_forward| / max |reference|
    at M = 16: correctness next to speed, a quick check when run on a new machine (a GPU)."""
    with torch.no_grad():
        dt, fn = factory()
        row = {"ms": {m: _time_ms(partial(fn, torch.randn(m, k, device=device, dtype=dt)), device) for m in ms}}
        if hasattr(fn, "reference_forward"):
            x = torch.randn(16, k, device=device, dtype=act).to(dt)
            ref = fn.reference_forward(x).float()
            row["rel_err"] = float((fn(x).float() - ref).abs().max() / ref.abs().max())
    return row


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="out_features")
    ap.add_argument("--k", type=int, default=1024, help="in_features")
    ap.add_argument("--ms", default="1,4,16,64,256", help="comma-separated M values")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--act-dtype", default=None, choices=["float32", "bfloat16"],
                    help="model activation dtype fed to quantized layers (default: fp32 on CPU, bf16 on CUDA)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--min-s", type=float, default=0.2, help="timing seconds per (path, M)")
    ap.add_argument("--timeout", type=float, default=85, help="seconds for all paths together")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--phases", help=argparse.SUPPRESS)  # child process: comma-separated path names
    ap.add_argument("--phase-out", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    global _MIN_S
    _MIN_S = a.min_s
    act = getattr(torch, a.act_dtype) if a.act_dtype else (torch.float32 if device.type == "cpu" else torch.bfloat16)
    ms = [int(v) for v in a.ms.split(",")]
    paths = build_paths(a.n, a.k, device, act)
    if a.phases:  # child: these paths here; a CUDA error stops the child, the parent goes on in a new one
        return child_main(a.phases.split(","), a.phase_out, lambda name: run_path(paths[name], a.k, ms, device, act))
    out = {"n": a.n, "k": a.k, "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "act_dtype": str(act), "ms_per_matmul": {}, "rel_err_vs_reference_m16": {}, "phases": {}, "errors": 0,
           "date": time.strftime("%Y-%m-%d")}

    def on_phase(name, res):  # JSON after every path
        if "ms" in res:
            out["ms_per_matmul"][name] = {int(m): t for m, t in res.pop("ms").items()}  # JSON made keys str
        if "rel_err" in res:
            out["rel_err_vs_reference_m16"][name] = res.pop("rel_err")
        out["phases"][name] = res
        out["errors"] = sum(r.get("status") != "ok" for r in out["phases"].values())
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=2))

    skip = {"--json"}
    argv_child = [x for i, x in enumerate(sys.argv[1:] if argv is None else argv)
                  if x not in skip and (i == 0 or (sys.argv[1:] if argv is None else argv)[i - 1] not in skip)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    run_isolated([sys.executable, str(Path(__file__).resolve())] + argv_child, list(paths), a.timeout, on_phase, env=env)
    print_table(out, a, device, act, ms)
    return 0 if out["errors"] == 0 else 1


def print_table(out, a, device, act, ms):
    res, rel_err = out["ms_per_matmul"], out["rel_err_vs_reference_m16"]
    width = max([len(p) for p in out["phases"]] + [4]) + 2
    print(f"ms per matmul, weight {a.n}x{a.k}, device {device} "
          f"({torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'cpu'}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, quantized-layer input {act}")
    print("path".ljust(width) + "".join(f"M={m}".rjust(10) for m in ms) + "   rel.err vs reference")
    for name, ph in out["phases"].items():
        if name not in res:
            print(name.ljust(width) + f"FAILED: {ph.get('error')}")
            continue
        err = f"{rel_err[name]:.1e}" if name in rel_err else "-"
        print(name.ljust(width) + "".join(f"{res[name][m]:10.3f}" for m in ms) + f"   {err}")


if __name__ == "__main__":
    sys.exit(main())
