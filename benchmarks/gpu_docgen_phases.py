"""The phases of benchmarks/gpu_docgen.py, each run in its own process by it:

    python -m benchmarks.gpu_docgen_phases PHASE SPEC_JSON OUT_JSON

A sticky CUDA error (an illegal address in a kernel) poisons every later CUDA call of the process,
so the engine, the agreement check and transformers each get a fresh process, and the random
checkpoint is built in one too (its ~15 GB of weights leave with it instead of shrinking the KV
pool). Each phase rewrites OUT_JSON after every step, so a timeout keeps what was measured, and
records an exception as {"status": "failed", "error_messages": [...]} instead of dying silently.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.checks import (  # noqa: E402
    count_engine_outputs, count_hf_outputs, free_running_agreement, teacher_forced_agreement,
)
from benchmarks.workload import docgen_workload  # noqa: E402


class Recorder:
    """The phase's result dict, written to disk after every step."""

    def __init__(self, path: str):
        self.path, self.res = path, {"status": "running", "steps": {}}

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.res, f, indent=1, default=str)
        os.replace(tmp, self.path)

    def step(self, name: str, fn):
        """Run one timed step; its seconds (and error, if any) land in res["steps"]."""
        t = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        try:
            value = fn()
        finally:
            dt = time.perf_counter() - t
            self.res["steps"][name] = round(dt, 3)
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {dt:.1f} s", flush=True)
            self.save()
        return value


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def workload(spec):
    return docgen_workload(spec["chunks"], spec["vocab_size"], prefix_len=spec["prefix_len"],
                           chunk_min=spec["chunk_min"], chunk_max=spec["chunk_max"],
                           max_new_tokens=spec["max_new_tokens"])


def engine_kwargs(spec, **over) -> dict:
    kw = dict(device=spec["device"], max_num_batched_tokens=spec["max_num_batched_tokens"],
              enable_compilation=spec["compile"])
    if spec["attention_backend"]:
        kw["attention_backend"] = spec["attention_backend"]
    kw.update(over)
    return kw


def phase_checkpoint(spec, rec: Recorder) -> None:
    from benchmarks.random_checkpoint import build_checkpoint

    dtype = getattr(torch, spec["dtype"])
    path = rec.step("build", lambda: build_checkpoint(spec["workdir"], spec["preset"], dtype=dtype,
                                                      device=spec["device"]))
    rec.res["path"] = str(path)


def timed_generate(llm, prompts, max_new, device):
    from app.engine import SamplingParams

    llm.block_manager.reset_prefix_cache()
    sync(device)
    t = time.perf_counter()
    outs = llm.generate(prompts, SamplingParams(max_tokens=max_new, ignore_eos=True))
    sync(device)
    return time.perf_counter() - t, outs


def phase_engine(spec, rec: Recorder) -> None:
    from app.engine import LLM

    device, wl, r = torch.device(spec["device"]), workload(spec), rec.res
    llm = rec.step("cold_start", lambda: LLM(spec["path"], max_num_seqs=max(spec["chunks"], 8), **engine_kwargs(spec)))
    r["load_report"] = {k: v for k, v in llm.load_report.as_dict().items() if k != "quantization"}
    r["weight_bytes"] = sum(p.numel() * p.element_size() for p in llm.runner.model.parameters())
    warm = wl.prompts[: min(8, spec["chunks"])]
    _, outs = rec.step("warmup", lambda: timed_generate(llm, warm, min(16, wl.max_new_tokens), device))
    r["warmup_check"] = count_engine_outputs(outs, len(warm), min(16, wl.max_new_tokens))
    dt, outs = rec.step("docgen", lambda: timed_generate(llm, wl.prompts, wl.max_new_tokens, device))
    r.update(seconds=dt, **count_engine_outputs(outs, len(wl.prompts), wl.max_new_tokens))
    r["gen_tok_s"] = r["generated_tokens"] / dt
    r["stats"] = llm.stats
    if device.type == "cuda":
        r["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    rec.save()
    b1 = rec.step("batch1_decode", lambda: batch1_decode(llm, spec["vocab_size"], device, spec["batch1_tokens"]))
    r["batch1"] = b1
    r["errors"] += b1["errors"]
    r["error_messages"] += b1["error_messages"]


def batch1_decode(llm, vocab, device, new_tokens) -> dict:
    """Decode tokens/s of one sequence, from the tokens its output really holds."""
    prompt = [3 + (i * 7919) % (vocab - 3) for i in range(32)]
    timed_generate(llm, [prompt], 8, device)  # warm
    dt, outs = timed_generate(llm, [prompt], new_tokens, device)
    c = count_engine_outputs(outs, 1, new_tokens)
    m = outs[0].metrics if outs else {}
    ttft = m.get("time_to_first_token")
    n = len(outs[0].token_ids) if outs else 0
    if ttft is None or n < 2:
        c["errors"] += 1
        c["error_messages"].append(f"batch-1 run has no decode timing (metrics {m}, {n} tokens)")
        return c
    c["decode_tok_s"] = (n - 1) / max(1e-9, dt - ttft)
    return c


def phase_agreement(spec, rec: Recorder) -> None:
    """The fast path (Triton + CUDA graphs on a GPU) against torch_ref, both in this process."""
    from app.engine import LLM, SamplingParams

    device, wl, r = torch.device(spec["device"]), workload(spec), rec.res
    n, k = min(spec["agreement_prompts"], spec["chunks"]), spec["agreement_tokens"]
    prompts = wl.prompts[:n]
    sp = SamplingParams(max_tokens=k, ignore_eos=True)
    small = dict(max_num_seqs=max(n, 4))  # few graph buckets: capture stays short
    fast_llm = rec.step("fast_start", lambda: LLM(spec["path"], **engine_kwargs(spec, **small)))
    r["fast_backend"] = fast_llm.load_report.attention_backend
    r["fast_cuda_graphs"] = fast_llm.load_report.cuda_graphs
    outs = rec.step("fast_generate", lambda: fast_llm.generate(prompts, sp))
    r["fast_check"] = count_engine_outputs(outs, n, k)
    fast = [o.token_ids for o in outs]
    del fast_llm, outs  # the reference engine sizes its pool after this one's memory is back
    ref_llm = rec.step("ref_start", lambda: LLM(spec["path"], **engine_kwargs(
        spec, attention_backend="torch_ref", enforce_eager=True, enable_compilation=False, **small)))
    ref = rec.step("ref_generate", lambda: [o.token_ids for o in ref_llm.generate(prompts, sp)])
    r["free_running"] = free_running_agreement(fast, ref)
    tf = rec.step("teacher_forced", lambda: teacher_forced_agreement(ref_llm, prompts, fast))
    r.update(tf)
    r["errors"] += r["fast_check"]["errors"]
    r["error_messages"] += r["fast_check"]["error_messages"]


def phase_transformers(spec, rec: Recorder) -> None:
    """generate_batch cold (manager build, cache allocation, its graph warm-up inside the call) and
    warm (the same persistent manager again): our engine's start-up is outside its timing too."""
    import inspect

    from transformers import AutoModelForCausalLM, GenerationConfig

    device, wl, r = torch.device(spec["device"]), workload(spec), rec.res
    dtype = getattr(torch, spec["dtype"])
    model = rec.step("load", lambda: load_hf_model(AutoModelForCausalLM, spec["path"], dtype, device))
    gc = GenerationConfig(max_new_tokens=wl.max_new_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
    params = inspect.signature(model.generate_batch).parameters
    persist = "persistent_manager" in params
    r["persistent_manager"] = persist
    kw = dict(persistent_manager=True) if persist else {}
    if spec.get("dry_run") and "warmup" in params:
        # its CUDA-graph warm-up takes ~20 s on a CPU and has nothing to warm there: the dry run skips it
        kw["warmup"] = False
        r["note_dry_run"] = "generate_batch(warmup=False): the cold figure excludes transformers' warm-up"

    def call():
        sync(device)
        t = time.perf_counter()
        res = model.generate_batch(inputs=wl.prompts, generation_config=gc, **kw)
        sync(device)
        return time.perf_counter() - t, res

    cold_s, res = rec.step("cold", call)
    r["cold"] = dict(seconds=cold_s, **count_hf_outputs(res, len(wl.prompts), wl.max_new_tokens))
    warm_s, res = rec.step("warm", call)
    r.update(seconds=warm_s, **count_hf_outputs(res, len(wl.prompts), wl.max_new_tokens))
    r["gen_tok_s"] = r["generated_tokens"] / warm_s
    if not persist:
        r["note"] = "this transformers has no persistent_manager: the warm call rebuilt its manager"
    r["errors"] += r["cold"]["errors"]
    r["error_messages"] += r["cold"]["error_messages"]
    if hasattr(model, "destroy_cached_continuous_batching_manager"):
        model.destroy_cached_continuous_batching_manager()


def load_hf_model(cls, path, dtype, device):
    """device_map loads straight onto the GPU (no 15 GB detour through host memory); some
    transformers builds want `accelerate` for it, then the plain way."""
    try:
        return cls.from_pretrained(path, dtype=dtype, device_map=str(device)).eval()
    except (ImportError, ValueError) as e:
        print(f"device_map load failed ({e}); loading on the CPU and moving", flush=True)
        return cls.from_pretrained(path, dtype=dtype).to(device).eval()


PHASES = {"checkpoint": phase_checkpoint, "engine": phase_engine, "agreement": phase_agreement,
          "transformers": phase_transformers}


def main(argv=None) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # capture/compile times
    phase, spec_path, out = argv or sys.argv[1:]
    spec = json.loads(open(spec_path).read())
    rec = Recorder(out)
    rec.res.update(errors=0, error_messages=[])
    rec.save()
    try:
        PHASES[phase](spec, rec)
        ok = rec.res["errors"] == 0
        rec.res["status"] = "ok" if ok else "failed"
    except BaseException as e:  # recorded for the JSON; the exit code tells the parent too
        rec.res["status"] = "failed"
        rec.res["errors"] = rec.res.get("errors", 0) + 1
        rec.res["error_messages"] = rec.res.get("error_messages", []) + [f"{type(e).__name__}: {e}"]
        rec.res["traceback"] = traceback.format_exc()[-4000:]
        traceback.print_exc()
    rec.save()
    return 0 if rec.res["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
