"""docgen's pipeline against the engine alone, on the same prompts, in the same process (issue 15).

1. `docgen run` (app.docgen.runner.run_docgen, the dataflow pipeline) on a real project of >= 500
   chunks (default: the standard library's `http` package, copied to a temporary folder), with the
   optimized generator on a real model; every prompt the pipeline sends (retries included) is
   recorded, and the engine's steps are timed in its own thread.
2. The engine alone: `LLM.generate` of all those prompts at once, same engine, same sampling
   settings, prefix cache emptied first, run in the engine's thread (where its model was built).
3. A fully cached rerun through the CLI in a fresh process (`python -m app run ...`): wall time,
   and whether the generator was loaded.

Reported: generated tokens/s of both and their ratio, the engine's mean batch size (sequences per
step) and idle fraction (wall time between its first and last step not spent stepping) during the
docgen run, the time from the pipeline's start to its first stored result, the cached rerun.

    python benchmarks/docgen_pipeline.py --json bench_out/docgen_pipeline.json
    python benchmarks/docgen_pipeline.py --project PATH --max-new-tokens 32 --max-batch-size 64
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from app.docgen.progress import Observer  # noqa: E402
from app.docgen.runner import RunOptions, run_docgen  # noqa: E402
from app.llm.types import GeneratorFactory  # noqa: E402


class Timeline(Observer):
    """Records when the pipeline started and when its first result reached the store."""

    def __init__(self) -> None:
        super().__init__()
        self.t_start = self.t_first_commit = self.t_end = None

    def start(self, total: int, waves: int) -> None:
        super().start(total, waves)
        self.t_start = time.perf_counter()

    def batch_done(self, tokens: int, seconds: float) -> None:  # called on every group commit
        super().batch_done(tokens, seconds)
        if self.t_first_commit is None and self.generated:
            self.t_first_commit = time.perf_counter()

    def message(self, text: str) -> None:
        super().message(text)
        if text == "all chunks done":
            self.t_end = time.perf_counter()


class EngineProbe:
    """Wraps the generator's engine: records each prompt submitted and times each engine step."""

    def __init__(self, gen) -> None:
        self.prompts: list = []
        self.params: list = []  # each prompt's own SamplingParams (a retry has a larger max_tokens)
        self.generated_tokens = 0
        self.step_seconds = 0.0
        self.first_step = self.last_step = None
        self.steps: list[tuple[float, int, int]] = []  # every step, both phases: (seconds, sequences, tokens)
        self.lock = threading.Lock()
        eng, llm = gen._engine, gen._engine.llm
        real_submit, real_step = eng.submit, llm.step

        def submit(prompt, params, rid, on_done, on_progress=None, **kw):
            self.prompts.append(prompt)
            self.params.append(params)

            def done(out):
                if not isinstance(out, BaseException):
                    with self.lock:
                        self.generated_tokens += len(out.token_ids)
                on_done(out)

            real_submit(prompt, params, rid, done, on_progress, **kw)

        def step():
            st = llm.scheduler.stats
            seqs, toks = st.seqs_in_steps, st.computed_tokens
            t0 = time.perf_counter()
            try:
                return real_step()
            finally:
                t1 = time.perf_counter()
                self.steps.append((t1 - t0, st.seqs_in_steps - seqs, st.computed_tokens - toks))
                self.step_seconds += t1 - t0
                self.first_step = self.first_step or t0
                self.last_step = t1

        eng.submit, llm.step = submit, step


def _step_summary(steps: list[tuple[float, int, int]]) -> dict:
    """Mean step time, sequences and tokens (prefill chunks + decodes) per step of one phase."""
    n = max(1, len(steps))
    return {"steps": len(steps), "seconds": sum(s[0] for s in steps), "mean_seconds": sum(s[0] for s in steps) / n,
            "mean_seqs": sum(s[1] for s in steps) / n, "mean_tokens": sum(s[2] for s in steps) / n}


def default_project() -> str:
    return os.path.join(sysconfig.get_paths()["stdlib"], "http")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", default=default_project())
    ap.add_argument("--model", default="/work/shared/models/docstring-13m")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--max-seq-length", type=int, default=1024)
    ap.add_argument("--max-batch-size", type=int, default=64, help="the engine's max_num_seqs (both runs)")
    ap.add_argument("--batch-size", type=int, default=0, help="docgen's cap on chunks in flight (0: default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json")
    a = ap.parse_args()
    import torch

    from app.llm.local_client_optimized import create_optimized_local_generator

    work = tempfile.mkdtemp(prefix="docgen-bench-")
    project = os.path.join(work, "project")
    shutil.copytree(a.project, project, ignore=shutil.ignore_patterns("__pycache__"))
    store, out = os.path.join(work, "store.sqlite"), os.path.join(work, "docs")
    model = os.path.abspath(a.model)
    holder: dict = {}

    def build():
        t0 = time.perf_counter()
        gen = create_optimized_local_generator(model, quantization="none", max_batch_size=a.max_batch_size,
                                               use_flash_attention=a.device == "cuda", device=a.device,
                                               max_seq_length=a.max_seq_length, max_new_tokens=a.max_new_tokens)
        gen.generate_batch(["def warm(x):\n    return x\n"])  # first-step overheads out of the measurement
        real_close, gen.close = gen.close, lambda: None  # kept open for the engine-alone run
        holder.update(gen=gen, close=real_close, probe=EngineProbe(gen), load_seconds=time.perf_counter() - t0)
        return gen

    # The same settings the CLI derives from its flags, so the CLI rerun below finds every result.
    sampling = {"temperature": 0.0, "max_new_tokens": a.max_new_tokens, "quantization": "none",
                "kv_cache_quantization": None}
    opts = RunOptions(path=project, out=out, store=store, batch_size=a.batch_size,
                      max_seq_length=a.max_seq_length, max_new_tokens=a.max_new_tokens, sampling=sampling)
    obs = Timeline()
    outcome = run_docgen(opts, GeneratorFactory(model, build), obs)
    rep = outcome.report
    gen, probe = holder["gen"], holder["probe"]
    stats = gen.engine_stats
    docgen_s = obs.t_end - obs.t_start
    window = probe.last_step - probe.first_step

    def engine_alone(llm):
        llm.block_manager.reset_prefix_cache()
        t0 = time.perf_counter()
        outs = llm.generate(probe.prompts, probe.params)
        return time.perf_counter() - t0, sum(len(o.token_ids) for o in outs)

    steps_before, seqs_before = stats["steps"], stats["seqs_in_steps"]
    busy = probe.step_seconds  # before the engine-alone run adds its own steps
    n_docgen_steps = len(probe.steps)
    alone_s, alone_tokens = gen._engine.call(engine_alone)
    after = gen.engine_stats
    holder["close"]()

    t0 = time.perf_counter()
    rerun = subprocess.run([sys.executable, "-m", "app", "run", project, "--model", model, "--quantization", "none",
                            "--max-new-tokens", str(a.max_new_tokens), "--max-seq-length", str(a.max_seq_length),
                            "--store", store, "--out", out, "--plain"], cwd=REPO, capture_output=True, text=True)
    rerun_s = time.perf_counter() - t0

    res = {
        "project": a.project, "chunks": rep.chunks, "waves": rep.waves, "files": rep.files, "model": model,
        "device": str(gen.report()["device"]), "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(), "max_new_tokens": a.max_new_tokens,
        "max_num_seqs": a.max_batch_size, "docgen_in_flight_cap": a.batch_size or "default",
        "prompts": len(probe.prompts), "retried": rep.retried, "retry_by_check": rep.retry_by_check, "reused": rep.reused, "errors": len(rep.errors),
        "load_seconds": holder["load_seconds"],
        "docgen_seconds": docgen_s, "docgen_generated_tokens": probe.generated_tokens,
        "docgen_tokens_per_s": probe.generated_tokens / docgen_s,
        "engine_alone_seconds": alone_s, "engine_alone_generated_tokens": alone_tokens,
        "engine_alone_tokens_per_s": alone_tokens / alone_s,
        "docgen_mean_batch": seqs_before / max(1, steps_before),
        "engine_alone_mean_batch": (after["seqs_in_steps"] - seqs_before) / max(1, after["steps"] - steps_before),
        "docgen_engine_idle_fraction": 1 - busy / window if window > 0 else None,
        "docgen_prompt_tokens": rep.prompt_tokens,
        "time_to_first_stored_result_s": (obs.t_first_commit - obs.t_start) if obs.t_first_commit else None,
        "cached_rerun_seconds": rerun_s, "cached_rerun_rc": rerun.returncode,
        "cached_rerun_loaded_generator": "generator: not loaded" not in rerun.stdout,
        "cached_rerun_report": [ln for ln in rerun.stdout.splitlines() if ln.startswith(("files documented", "generated:"))],
        "docgen_engine_steps": steps_before, "engine_alone_steps": after["steps"] - steps_before,
        "date": time.strftime("%Y-%m-%d"),
        "docgen_steps": _step_summary(probe.steps[:n_docgen_steps]),
        "engine_alone_steps_detail": _step_summary(probe.steps[n_docgen_steps:]),
    }
    res["ratio_docgen_over_engine"] = res["docgen_tokens_per_s"] / res["engine_alone_tokens_per_s"]
    print(f"project {a.project}: {rep.files} files, {rep.chunks} chunks, {rep.waves} waves; model {model} on "
          f"{res['device']}, max_num_seqs {a.max_batch_size}, {a.max_new_tokens} new tokens, greedy")
    print(f"{'':28}{'seconds':>10}{'gen tokens':>12}{'tok/s':>10}{'mean batch':>12}")
    print(f"{'docgen (dataflow pipeline)':28}{docgen_s:>10.1f}{probe.generated_tokens:>12}"
          f"{res['docgen_tokens_per_s']:>10.1f}{res['docgen_mean_batch']:>12.1f}")
    print(f"{'engine alone (generate)':28}{alone_s:>10.1f}{alone_tokens:>12}{res['engine_alone_tokens_per_s']:>10.1f}"
          f"{res['engine_alone_mean_batch']:>12.1f}")
    print(f"ratio docgen / engine: {res['ratio_docgen_over_engine']:.2f}; engine idle during docgen: "
          f"{res['docgen_engine_idle_fraction']:.1%}; first stored result after "
          f"{res['time_to_first_stored_result_s']:.1f} s; {len(probe.prompts)} prompts ({rep.retried} retries)")
    for name, key in (("docgen", "docgen_steps"), ("engine alone", "engine_alone_steps_detail")):
        d = res[key]
        print(f"{name}: {d['steps']} steps, {d['mean_seconds'] * 1e3:.0f} ms/step, {d['mean_tokens']:.0f} tokens/step "
              f"(prefill + decode), {d['mean_seqs']:.1f} sequences/step")
    if alone_tokens != probe.generated_tokens:
        print(f"WARNING: the engine alone generated {alone_tokens} tokens, docgen {probe.generated_tokens}: "
              "greedy runs of the same prompts and settings should agree")
    print(f"cached rerun (CLI, fresh process): {rerun_s:.2f} s, rc {rerun.returncode}, generator loaded: "
          f"{res['cached_rerun_loaded_generator']}")
    if rerun.returncode:
        print(rerun.stderr[-2000:])
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)) or ".", exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2, default=str)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
