"""Run a benchmark's phases so that one failure costs only that phase.

A sticky CUDA error (illegal address, device-side assert) poisons every later CUDA call of its
process, and a crash or a timeout loses everything in memory. So the parent runs the phases in a
child process that writes its results to a JSON file after each phase; when a phase fails with a
CUDA error the child stops, and when the child dies or times out the parent marks the phase it was
in as failed and starts a fresh child for the phases left. In the usual case (nothing fails) this
costs one child process.

Parent:  results = run_isolated(cmd, phases, timeout, on_phase)   (cmd: argv of the child, without
         the phase list; run_isolated appends  --phases a,b,c --phase-out FILE)
Child:   child_main(phases, out_path, run_phase)  where run_phase(name) -> dict
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import traceback

POISON = ("CUDA error", "illegal memory access", "device-side assert", "AcceleratorError", "misaligned address",
          "unspecified launch failure")


def _write(path: str, data: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


def child_main(phases: list[str], out_path: str, run_phase) -> int:
    """Run phases in order; 3 = stopped after a CUDA error (the parent continues elsewhere)."""
    state = {"done": {}, "current": None}
    for name in phases:
        state["current"] = name
        _write(out_path, state)
        t = time.perf_counter()
        try:
            res = dict(run_phase(name) or {})
            res.setdefault("status", "ok")
        except Exception as e:
            msg = f"{type(e).__name__}: {e}"
            res = {"status": "failed", "error": msg[:2000], "traceback": traceback.format_exc()[-3000:]}
        res["seconds"] = round(time.perf_counter() - t, 3)
        state["done"][name] = res
        state["current"] = None
        _write(out_path, state)
        print(f"phase {name}: {res['status']} ({res['seconds']} s)", flush=True)
        if res["status"] == "failed" and any(p in res.get("error", "") for p in POISON):
            return 3
    return 0


def run_isolated(cmd: list[str], phases: list[str], timeout: float, on_phase=None, env=None, cwd=None) -> dict:
    """{phase: result}; on_phase(name, result) is called as each result arrives (write JSON there)."""
    results: dict[str, dict] = {}
    left = list(phases)
    fd, out = tempfile.mkstemp(suffix=".json", prefix="phases_")
    os.close(fd)
    try:
        while left:
            _write(out, {"done": {}, "current": None})
            t = time.perf_counter()
            try:
                p = subprocess.run(cmd + ["--phases", ",".join(left), "--phase-out", out], env=env, cwd=cwd,
                                   capture_output=True, text=True, timeout=max(1.0, timeout))
                rc, log = p.returncode, (p.stdout + p.stderr)
            except subprocess.TimeoutExpired as e:
                rc, log = "timeout", str(e.stdout or "")[-2000:] + str(e.stderr or "")[-2000:]
            timeout -= time.perf_counter() - t
            state = json.load(open(out))
            for name, res in state["done"].items():
                results[name] = res
                left.remove(name)
                if on_phase:
                    on_phase(name, res)
            if not left:
                break
            stuck = state.get("current") or left[0]
            if rc == 3:
                continue  # the child stopped after a CUDA error: fresh process for the rest
            res = {"status": "failed", "error": f"child process ended with {rc} during this phase", "log_tail": log[-3000:]}
            results[stuck] = res
            left.remove(stuck)
            if on_phase:
                on_phase(stuck, res)
            if rc == "timeout" or timeout <= 0:
                for name in left:
                    results[name] = {"status": "failed", "error": "not run: the time limit was spent"}
                    if on_phase:
                        on_phase(name, results[name])
                break
    finally:
        os.unlink(out)
    return results


def run_python_result(code: str, what: str) -> dict:
    """Run `code` in a fresh `python -c` and return the JSON it printed on a line starting with
    RESULT (one fresh process per measurement: memory peaks and caches do not carry over); exits
    with the child's stderr tail when there is none."""
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        raise SystemExit(f"the engine failed ({what}):\n{out.stderr[-3000:]}")
    return json.loads(line[len("RESULT"):])
