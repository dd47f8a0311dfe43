"""Load time and memory of the engine per weight format: each start in a fresh process.

    .venv/bin/python benchmarks/load_memory.py [--model DIR | --preset cpu-31m] [--formats none,8bit,4bit]
        [--threads 1] [--json out.json]

For each format it starts the engine twice in new processes with an empty quantized-weights cache
directory: "cold" (quantizes while reading the checkpoint) then "cache" (maps the cached file).
Printed from `llm.load_report.load`: load seconds, the final model's bytes (weight_bytes), the
peak RSS growth during the load over the process's RSS before it, their ratio (issue 14's target:
<= 1.3), and the RSS after the load (the whole process, imports included). KV pool excluded (it
is allocated after the load meter stops; its size is in kv_tokens).
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
import json, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
from app.engine import LLM
fmt = {fmt!r}
llm = LLM({model!r}, quantization=None if fmt == "none" else fmt, quant_cache_dir={cache!r},
          max_num_seqs=4, max_model_len=512)
r = llm.load_report
print("RESULT" + json.dumps({{**r.load, "cache": r.quantization.cache if r.quantization else None,
                             "kv_cache_dtype": r.kv_cache_dtype}}))
"""


def run_child(model: str, fmt: str, cache: str, threads: int) -> dict:
    code = CHILD.format(root=str(ROOT), threads=threads, fmt=fmt, model=model, cache=cache)
    return run_python_result(code, f"start, {fmt}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a local HF checkpoint folder (default: build --preset)")
    ap.add_argument("--preset", default="cpu-31m", help="random-weight preset built in a temp dir")
    ap.add_argument("--formats", default="none,8bit,4bit")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    tmp = tempfile.TemporaryDirectory()
    model = a.model
    if model is None:
        sys.path.insert(0, str(ROOT))
        from benchmarks.random_checkpoint import build_checkpoint

        model = str(build_checkpoint(Path(tmp.name) / "ckpt", a.preset))
    rows = []
    for fmt in a.formats.split(","):
        cache = str(Path(tmp.name) / f"cache-{fmt}")
        for start in ("cold", "cache") if fmt != "none" else ("cold",):
            r = run_child(model, fmt, cache, a.threads)
            rows.append({"format": fmt, "start": start, **r})
    mib = 2**20
    print(f"checkpoint {model}; each start in a fresh process, {a.threads} thread(s)")
    print(f"{'format':8}{'start':7}{'cache':>6}{'load s':>8}{'model MiB':>11}{'peak growth MiB':>17}{'ratio':>7}"
          f"{'RSS after MiB':>15}{'KV':>10}")
    for r in rows:
        growth = r.get("peak_growth_bytes")
        print(f"{r['format']:8}{r['start']:7}{str(r['cache'] or '-'):>6}{r['seconds']:8.2f}{r['model_bytes'] / mib:11.1f}"
              f"{(growth or 0) / mib:17.1f}{r.get('peak_growth_over_model', float('nan')):7.2f}"
              f"{r['rss_after'] / mib:15.1f}{r['kv_cache_dtype']:>10}")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": model, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
