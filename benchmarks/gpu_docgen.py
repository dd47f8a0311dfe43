"""GPU benchmark: our engine vs transformers on the docgen workload (shared/design/REFERENCE.md).

Unattended; JSON to --json, rewritten after every phase. On one GPU with the defaults it builds the
Qwen2.5-Coder-7B-shaped random-weight checkpoint (bf16), then measures, each phase in its own
process (benchmarks/gpu_docgen_phases.py: a CUDA error in one cannot poison the next):
  engine        cold start (load + KV pool + CUDA-graph capture + compile if asked), a warm-up, the
                docgen workload (100 chunks, 200-token shared system prompt, 300-600-token chunks,
                128 new tokens, greedy, EOS ignored), batch-1 decode tok/s vs the bandwidth roofline;
  agreement     the fast path (Triton + CUDA graphs) against torch_ref in one process: free-running
                greedy, and teacher-forced next-token agreement over chunks x tokens positions;
  transformers  `generate_batch` on the same prompts, cold (its manager and warm-up inside the
                call) and warm (the same persistent manager again).
Token counts come from the outputs; a phase with any error or missing token is "failed", with
its messages in the JSON. The checkpoint is deleted at the end (--keep-checkpoint keeps it).

    python benchmarks/gpu_docgen.py --json bench_out/gpu_docgen.json
    python benchmarks/gpu_docgen.py --dry-run --json /tmp/d.json   # tiny shapes on the CPU (interpreter)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
H200_BANDWIDTH = 4.8e12  # bytes/s, HBM3e spec sheet (the GPU machine: one H200)
DRY_RUN = dict(preset="tiny", device="cpu", chunks=3, max_new_tokens=5, prefix_len=8, chunk_min=6, chunk_max=12,
               agreement_prompts=2, agreement_tokens=4, batch1_tokens=4, attention_backend="triton")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU, Triton under the interpreter")
    ap.add_argument("--preset", default="qwen2.5-coder-7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--chunks", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--prefix-len", type=int, default=200)
    ap.add_argument("--chunk-min", type=int, default=300)
    ap.add_argument("--chunk-max", type=int, default=600)
    ap.add_argument("--max-num-batched-tokens", type=int, default=16384)
    ap.add_argument("--attention-backend", default=None, help="default: the engine's choice (triton on CUDA)")
    ap.add_argument("--compile", action="store_true", help="enable_compilation in the engine")
    ap.add_argument("--skip-hf", action="store_true", help="skip transformers generate_batch")
    ap.add_argument("--agreement-prompts", type=int, default=8)
    ap.add_argument("--agreement-tokens", type=int, default=48, help="positions per prompt (teacher-forced)")
    ap.add_argument("--batch1-tokens", type=int, default=256)
    ap.add_argument("--phase-timeout", type=int, default=400, help="seconds per phase process")
    ap.add_argument("--time-budget", type=int, default=0,
                    help="seconds for the whole run (0: none): phases get what is left, so the run ends cleanly "
                         "before an outer time limit")
    ap.add_argument("--workdir", default=None, help="where to write the random checkpoint")
    ap.add_argument("--keep-checkpoint", action="store_true", help="keep it for a later run with the same --workdir")
    ap.add_argument("--phases", default="engine,agreement,transformers",
                    help="which of engine,agreement,transformers (the checkpoint is built or reused first)")
    ap.add_argument("--json", default=None, help="results; an existing file of the same preset is updated")
    args = ap.parse_args(argv)
    if args.dry_run:
        for k, v in DRY_RUN.items():
            setattr(args, k, v)
    args.phases = [p for p in args.phases.split(",") if p]
    if args.skip_hf and "transformers" in args.phases:
        args.phases.remove("transformers")
    bad = set(args.phases) - {"engine", "agreement", "transformers"}
    if bad:
        ap.error(f"unknown phases {sorted(bad)}: choose from engine, agreement, transformers")
    return args


def save(res, path):
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(res, f, indent=2, default=str)
        os.replace(path + ".tmp", path)


def run_phase(name: str, spec: dict, tmp: str, timeout: float, env: dict) -> dict:
    """One phase in a fresh process; its JSON (partial if it died) plus exit status and log tail."""
    if timeout < 5:
        return {"status": "failed", "errors": 1, "error_messages": ["not run: the --time-budget was spent"]}
    spec_path, out = os.path.join(tmp, "spec.json"), os.path.join(tmp, f"{name}.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    t = time.perf_counter()
    print(f"== phase {name}", flush=True)
    try:
        p = subprocess.run([sys.executable, "-m", "benchmarks.gpu_docgen_phases", name, spec_path, out], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=timeout)
        rc, log = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, log = "timeout", (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
    print("\n".join("   | " + line for line in log.splitlines()[-200:]), flush=True)  # into the step's log file
    res = json.load(open(out)) if os.path.exists(out) else {"errors": 0, "error_messages": []}
    res["wall_s"] = round(time.perf_counter() - t, 2)
    res["exit"] = rc
    if rc != 0 and res.get("status") != "failed" or rc == "timeout":
        res["status"] = "failed"
        res["errors"] = res.get("errors", 0) + 1
        res.setdefault("error_messages", []).append(
            f"phase process ended with {rc} after {res['wall_s']} s" + (f" (limit {timeout} s)" if rc == "timeout" else ""))
    if res.get("status") != "ok":
        res["log_tail"] = log[-3000:]
    print(f"   {res.get('status')} in {res['wall_s']} s; steps {res.get('steps')}", flush=True)
    for m in res.get("error_messages", [])[:5]:
        print(f"   ! {m}", flush=True)
    return res


def header(args) -> dict:
    import torch

    res = {"preset": args.preset, "device": args.device, "dry_run": args.dry_run, "torch": torch.__version__,
           "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "command": " ".join(sys.argv), "chunks": args.chunks, "max_new_tokens": args.max_new_tokens}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        res["device"] = torch.cuda.get_device_name()
    for mod in ("transformers", "triton"):
        try:
            res[f"{mod}_version"] = __import__(mod).__version__
        except ImportError:
            res[f"{mod}_version"] = None
    return res


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: use --dry-run for a tiny run on the CPU")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if args.dry_run or not args.device.startswith("cuda"):
        env["TRITON_INTERPRET"] = "1"  # Triton kernels under the interpreter on the CPU
    res = previous_results(args) | header(args)
    workdir = args.workdir or tempfile.mkdtemp(prefix="gpu_docgen_ckpt_")
    tmp = tempfile.mkdtemp(prefix="gpu_docgen_phases_")
    spec = {k: getattr(args, k) for k in ("preset", "device", "chunks", "max_new_tokens", "prefix_len", "chunk_min",
                                          "chunk_max", "max_num_batched_tokens", "attention_backend", "compile",
                                          "agreement_prompts", "agreement_tokens", "batch1_tokens")}
    spec.update(workdir=workdir, dry_run=args.dry_run, dtype="bfloat16" if args.device.startswith("cuda") else "float32")
    t0 = time.monotonic()

    def limit() -> float:  # this phase's timeout: its own cap, within what is left of the budget
        left = args.time_budget - (time.monotonic() - t0) - 10 if args.time_budget else args.phase_timeout
        return min(args.phase_timeout, left)

    marker = os.path.join(workdir, "gpu_docgen_checkpoint.json")  # written once the checkpoint is complete
    try:
        if os.path.exists(marker) and json.load(open(marker)).get("spec") == [spec["preset"], spec["dtype"]]:
            res["checkpoint"] = ck = {"status": "ok", "path": workdir, "reused": True, "errors": 0}
        else:
            res["checkpoint"] = ck = run_phase("checkpoint", spec, tmp, limit(), env)
            if ck.get("status") == "ok":
                json.dump({"spec": [spec["preset"], spec["dtype"]]}, open(marker, "w"))
        save(res, args.json)
        if ck.get("status") != "ok":
            return finish(res, args)
        from transformers import AutoConfig

        spec.update(path=ck["path"], vocab_size=AutoConfig.from_pretrained(ck["path"]).vocab_size)
        for name in args.phases:
            res[name] = run_phase(name, spec, tmp, limit(), env)
            save(res, args.json)
    finally:
        if not args.keep_checkpoint:
            shutil.rmtree(workdir, ignore_errors=True)
            res["checkpoint_deleted"] = True
        shutil.rmtree(tmp, ignore_errors=True)
    return finish(res, args)


def previous_results(args) -> dict:
    """Results of an earlier step of the same run (gpu_check.sh runs transformers as its own step)."""
    if not args.json or not os.path.exists(args.json):
        return {}
    try:
        old = json.load(open(args.json))
    except ValueError:
        return {}
    same = all(old.get(k) == getattr(args, k) for k in ("preset", "chunks", "max_new_tokens"))
    return {k: v for k, v in old.items() if k in ("engine", "agreement", "transformers")} if same else {}


def finish(res, args) -> dict:
    e = res.get("engine", {})
    if e.get("weight_bytes") and args.device.startswith("cuda"):
        res["batch1_roofline_tok_s"] = H200_BANDWIDTH / e["weight_bytes"]
    hf = res.get("transformers", {})
    if e.get("status") == "ok" and hf.get("status") == "ok":
        res["speedup_vs_transformers_warm"] = hf["seconds"] / e["seconds"]
        res["speedup_vs_transformers_cold"] = hf["cold"]["seconds"] / e["seconds"]
    present = ["checkpoint"] + [p for p in ("engine", "agreement", "transformers") if p in res or p in args.phases]
    res["status"] = "ok" if all(res.get(p, {}).get("status") == "ok" for p in present) else "failed"
    save(res, args.json)
    print_table(res)
    return res


def print_table(res):
    print(f"\ndocgen workload: {res['chunks']} chunks, {res['max_new_tokens']} new tokens each, preset "
          f"{res['preset']}, {res['device']}, torch {res['torch']}, triton {res['triton_version']}, "
          f"transformers {res['transformers_version']}")
    print(f"{'system':34} {'status':>7} {'seconds':>9} {'tokens':>14} {'gen tok/s':>10} {'errors':>7}")
    for name in ("engine", "transformers"):
        r = res.get(name)
        if not isinstance(r, dict):
            continue
        s = r.get("seconds")
        toks = f"{r.get('generated_tokens', '-')}/{r.get('expected_tokens', '-')}"
        rate = f"{r['generated_tokens'] / s:10.0f}" if s and r.get("generated_tokens") is not None else f"{'-':>10}"
        print(f"{name:34} {r.get('status', '-'):>7} {s if s is None else round(s, 3)!s:>9} {toks:>14} {rate} "
              f"{r.get('errors', '-')!s:>7}")
    a = res.get("agreement", {})
    if "fraction" in a:
        print(f"fast path vs torch_ref: teacher-forced {a['agreeing']}/{a['positions']} positions agree; "
              f"free-running {a['free_running']['identical']}/{a['free_running']['sequences']} identical")
    b1 = res.get("engine", {}).get("batch1", {})
    if "decode_tok_s" in b1:
        line = f"batch-1 decode: {b1['decode_tok_s']:.1f} tok/s"
        if "batch1_roofline_tok_s" in res:
            line += f" ({b1['decode_tok_s'] / res['batch1_roofline_tok_s']:.0%} of {res['batch1_roofline_tok_s']:.0f})"
        print(line)
    print(f"overall: {res['status']}")


if __name__ == "__main__":
    sys.exit(0 if main().get("status") == "ok" else 1)
