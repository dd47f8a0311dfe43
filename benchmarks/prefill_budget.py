"""Prefill token budget on the CPU: time and peak memory of a docgen-like batch at each
EngineConfig.max_num_batched_tokens (the most tokens one step computes, so the size of the
activations a step holds; prompts longer than the budget are prefilled in chunks).

Each budget runs in a fresh process (same checkpoint, format and prompts), reported:
  - batch: seconds (wall and this process's CPU) for `--requests` docgen-workload prompts
    (shared prefix, then a code chunk; benchmarks/workload.py) submitted at once, `--new-tokens` each;
  - prompt: seconds to prefill one `--prompt-len`-token prompt (max_tokens=1; its first 100 tokens
    are the batch's shared prefix, so the batch after it finds that prefix cached, at every budget);
  - peak MiB: the peak resident memory during the batch above the resident memory before it
    (VmHWM reset by app.engine.memory.reset_peak), i.e. activations and KV pages written.

    python benchmarks/prefill_budget.py --model /tmp/q15b --format 8bit --budgets 8192,2048,512 --threads 2
    python benchmarks/prefill_budget.py --dry-run     # tiny random model, seconds
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.isolate import run_python_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import torch
from app.engine import LLM, SamplingParams
from app.engine.memory import peak_rss, reset_peak, rss
from benchmarks.workload import docgen_workload
kw = dict(quantization={fmt!r}, quant_cache_dir={cache!r}, cpu_threads={threads}, device="cpu",
          kv_cache_memory_gb={kv_gb}, max_model_len=2048)
if {budget} > 0:
    kw["max_num_batched_tokens"] = {budget}
llm = LLM({model!r}, **kw)
wl = docgen_workload({requests}, llm.hf_config.vocab_size, prefix_len=100, chunk_min=150, chunk_max=300,
                     max_new_tokens={new_tokens}, seed=0)
sp = SamplingParams(max_tokens={new_tokens}, ignore_eos=True)
one = (wl.prompts[0] + wl.prompts[-1])[:{prompt_len}]
llm.generate([one[:8]], SamplingParams(max_tokens=1, ignore_eos=True))  # warm-up
t0, c0 = time.perf_counter(), time.process_time()
llm.generate([one], SamplingParams(max_tokens=1, ignore_eos=True))
prompt_s, prompt_cpu = time.perf_counter() - t0, time.process_time() - c0
base = rss()
reset_peak()
t0, c0 = time.perf_counter(), time.process_time()
outs = llm.generate(wl.prompts, sp)
batch_s, batch_cpu = time.perf_counter() - t0, time.process_time() - c0
peak = peak_rss()
print("RESULT" + json.dumps(dict(budget=llm.config.max_num_batched_tokens, batch_s=batch_s, batch_cpu=batch_cpu,
      prompt_s=prompt_s, prompt_cpu=prompt_cpu, prompt_len=len(one), prompt_tokens=wl.prompt_tokens,
      peak_growth_mib=(peak - base) / 2**20, rss_before_mib=base / 2**20, steps=llm.stats["steps"],
      tokens=[o.token_ids for o in outs])))
"""


def run_child(a, budget: int) -> dict:
    code = CHILD.format(root=str(ROOT), fmt=None if a.format == "none" else a.format, cache=a.quant_cache,
                        threads=a.threads, kv_gb=a.kv_gb, budget=budget, model=a.model, requests=a.requests,
                        new_tokens=a.new_tokens, prompt_len=a.prompt_len)
    return run_python_result(code, f"budget {budget}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a local HF checkpoint folder (default: --dry-run's tiny random one)")
    ap.add_argument("--dry-run", action="store_true", help="tiny random model, few requests")
    ap.add_argument("--format", default="8bit", help="none | 8bit | 4bit")
    ap.add_argument("--budgets", default="8192,512", help="max_num_batched_tokens values; 0 = the engine's default")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=271)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the budgets in turn (A B A B) to expose load")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kv-gb", type=float, default=0.5)
    ap.add_argument("--quant-cache", default="", help="quantized-weights cache dir ('' = none)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    tmp = tempfile.TemporaryDirectory()
    if a.model is None:
        sys.path.insert(0, str(ROOT))
        from benchmarks.random_checkpoint import build_checkpoint

        a.model = str(build_checkpoint(Path(tmp.name) / "m", "tiny" if a.dry_run else "cpu-31m"))
        if a.dry_run:
            a.requests, a.new_tokens, a.prompt_len = 4, 2, 64
    rows = [run_child(a, int(b)) for _ in range(a.rounds) for b in a.budgets.split(",")]
    print(f"{a.model}, {a.format}, {a.threads} thread(s), {a.requests} requests of {rows[0]['prompt_tokens']} "
          f"prompt tokens in all, {a.new_tokens} new tokens each")
    print(f"{'budget':>7}{'steps':>7}{'batch s':>9}{'batch CPU s':>12}{'prompt s':>10}{'prompt CPU s':>13}"
          f"{'peak MiB':>10}")
    for r in rows:
        print(f"{r['budget']:>7}{r['steps']:>7}{r['batch_s']:>9.2f}{r['batch_cpu']:>12.2f}{r['prompt_s']:>10.2f}"
              f"{r['prompt_cpu']:>13.2f}{r['peak_growth_mib']:>10.1f}")
    same = all(r["tokens"] == rows[0]["tokens"] for r in rows)
    # Quantized CPU layers pick the packed kernel or the dense bf16 path by the step's token count
    # (dense_min_m), and chunks attend to the cached (bf16) KV: with near-tied logits (random
    # weights) a few greedy tokens may differ; the unquantized fp32 engine is token-exact (tests).
    n_req = len(rows[0]["tokens"])
    n_same = [f"{sum(a == b for a, b in zip(r['tokens'], rows[0]['tokens']))}/{n_req}" for r in rows]
    print(f"greedy tokens identical across budgets: {same} (requests identical to the first row's: "
          f"{', '.join(n_same)})")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "format": a.format, "threads": a.threads,
                                            "rows": [{k: v for k, v in r.items() if k != "tokens"} for r in rows],
                                            "tokens_identical": same}, indent=2))


if __name__ == "__main__":
    main()
