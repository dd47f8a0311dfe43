"""Micro-benchmark of the quantized linear paths: ms per matmul for several M (tokens per call).

    .venv/bin/python benchmarks/quant_kernels.py [--n 1024 --k 1024] [--device cpu|cuda] [--json out.json]

Rows are the layer paths the engine can run: dense (fp32 / bf16 F.linear), int4 through the packed
kernel (activations cast to bf16, or fp32), int4 dequantize + dense matmul (the large-M path), int8
likewise, and fp8 _scaled_mm on CUDA. The crossover M (where dense beats the packed kernel) sets
support.default_dense_min_m. Timings are the fastest of 5 repeats (the dev machine is shared; contention only adds time).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.engine.quant import Fp8Linear, Int4Linear, Int8Linear, supported_formats  # noqa: E402


def _time_ms(fn, device, min_s=0.2, reps=5):
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
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=False, device=device, dtype=torch.float32)
    w32 = lin.weight.detach()
    wbf = w32.to(torch.bfloat16)
    paths = {
        "dense fp32": (torch.float32, lambda x: F.linear(x, w32)),
        "dense bf16": (torch.bfloat16, lambda x: F.linear(x, wbf)),
    }
    sup = supported_formats(device)
    if sup["4bit"] is None:
        for tag, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            if device.type == "cuda" and dt != torch.bfloat16:
                continue
            # dense_min_m huge: never dense, but keeps the portable levels so the reference is independent
            m = Int4Linear.from_linear(lin, 128, dense_min_m=10**9, cpu_compute_dtype=dt)
            paths[f"int4 kernel ({tag} act)"] = (act_dtype, m)
        m = Int4Linear.from_linear(lin, 128, dense_min_m=1)  # dense matmul in bf16 (the kernel dtype)
        paths["int4 dequant+dense (bf16)"] = (act_dtype, m)
    if sup["8bit"] is None:
        if device.type == "cpu":
            for tag, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
                paths[f"int8 kernel ({tag} act)"] = (act_dtype, Int8Linear.from_linear(lin, dense_min_m=10**9,
                                                                                        cpu_compute_dtype=dt))
        paths["int8 dequant+dense (bf16)"] = (act_dtype, Int8Linear.from_linear(lin, dense_min_m=1))
    if sup["fp8"] is None:
        paths["fp8 _scaled_mm (incl. x cast)"] = (torch.bfloat16, Fp8Linear.from_linear(lin))
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="out_features")
    ap.add_argument("--k", type=int, default=1024, help="in_features")
    ap.add_argument("--ms", default="1,4,16,64,256", help="comma-separated M values")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--act-dtype", default=None, choices=["float32", "bfloat16"],
                    help="model activation dtype fed to quantized layers (default: fp32 on CPU, bf16 on CUDA)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--json", default=None, help="write results here")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    act = getattr(torch, a.act_dtype) if a.act_dtype else (torch.float32 if device.type == "cpu" else torch.bfloat16)
    ms = [int(v) for v in a.ms.split(",")]
    paths = build_paths(a.n, a.k, device, act)
    results = {}
    with torch.no_grad():
        for name, (dt, fn) in paths.items():
            results[name] = {}
            for m in ms:
                x = torch.randn(m, a.k, device=device, dtype=dt)
                results[name][m] = _time_ms(lambda: fn(x), device)
    # Correctness next to speed (not a test: a quick check when run on a new machine, e.g. a GPU):
    # max |y - reference_forward| / max |reference| at M = 16 for every quantized path.
    rel_err = {}
    with torch.no_grad():
        x = torch.randn(16, a.k, device=device, dtype=act)
        for name, (dt, fn) in paths.items():
            if hasattr(fn, "reference_forward"):
                ref = fn.reference_forward(x.to(dt)).float()
                rel_err[name] = float((fn(x.to(dt)).float() - ref).abs().max() / ref.abs().max())
    width = max(len(p) for p in results) + 2
    print(f"ms per matmul, weight {a.n}x{a.k}, device {device} "
          f"({torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'cpu'}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, quantized-layer input {act}")
    print("path".ljust(width) + "".join(f"M={m}".rjust(10) for m in ms) + "   rel.err vs reference")
    for name, row in results.items():
        err = f"{rel_err[name]:.1e}" if name in rel_err else "-"
        print(name.ljust(width) + "".join(f"{row[m]:10.3f}" for m in ms) + f"   {err}")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "n": a.n, "k": a.k, "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "act_dtype": str(act), "ms_per_matmul": results, "rel_err_vs_reference_m16": rel_err, "date": time.strftime("%Y-%m-%d"),
        }, indent=2))


if __name__ == "__main__":
    main()
