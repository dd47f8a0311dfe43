"""Speculative decoding on the CPU: speculation on vs off, same greedy output required.

Workload: Python functions of the standard library (docstrings cut out with `ast`), rendered with
the trained docstring model's chat template (roles code/doc, ../shared/models/README.md).

1. batch 1, prompt lookup, "repeat" prompts: [code f, doc d, code f] where d is the model's own
   earlier documentation of f (a re-documentation prompt that the output can copy from);
2. batch 1, prompt lookup, plain docstring prompts;
2b. batch 1, prompt lookup, "loop" prompts: a docstring prompt followed by 192 tokens of the model's
   own greedy continuation (ignore_eos), which for this small model settles into a repeating
   pattern: the output then repeats text of the prompt (the mechanism's ceiling; no instruct model
   that follows "repeat this code" runs on this CPU);
3. full batch (all prompts submitted at once), automatic policy vs off, prompt lookup and draft;
4. batch 1, draft model docstring-draft-4m for docstring-13m: acceptance and speedup.

Each timing is the median (and, as a second estimate robust to stalls from other jobs, the
minimum) of --repeats runs, on and off interleaved; the automatic policy keeps what it measured
across repeats, so its exploration cost shows in the first run ("first run" column). Prints a table and writes
JSON to --json. CPU timings on a shared machine are noisy: say so next to any figure.

    .venv/bin/python benchmarks/spec_cpu.py --json spec_cpu.json
"""
from __future__ import annotations

import argparse
import ast
import json
import pathlib
import platform
import statistics
import sysconfig
import time

import torch

from app.engine import LLM, SamplingParams

MODELS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "models"
STDLIB_FILES = ("textwrap.py", "shlex.py", "fnmatch.py", "base64.py", "bisect.py", "glob.py",
                "ntpath.py", "posixpath.py", "string.py", "difflib.py", "heapq.py", "calendar.py")


def stdlib_functions(n: int, max_chars: int = 1200) -> list[tuple[str, str]]:
    """(source without its docstring, docstring) of the first n documented functions."""
    out = []
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB_FILES:
        src = (root / name).read_text()
        for node in ast.walk(ast.parse(src)):
            if not isinstance(node, ast.FunctionDef) or not ast.get_docstring(node):
                continue
            lines = ast.get_source_segment(src, node).splitlines()
            d = node.body[0]
            code = "\n".join(lines[: d.lineno - node.lineno] + lines[d.end_lineno - node.lineno + 1 :])
            if 80 < len(code) <= max_chars and len(node.body) > 1:
                out.append((code, ast.get_docstring(node)))
            if len(out) == n:
                return out
    return out


def run(llm: LLM, prompts: list[str], max_tokens: int, batch1: bool) -> tuple[float, list[list[int]]]:
    sp = SamplingParams(max_tokens=max_tokens)
    t0 = time.perf_counter()
    if batch1:
        outs = [llm.generate([p], sp)[0] for p in prompts]
    else:
        outs = llm.generate(prompts, sp)
    return time.perf_counter() - t0, [o.token_ids for o in outs]


def compare(name: str, off: LLM, on: LLM, prompts, max_tokens: int, batch1: bool, repeats: int) -> dict:
    run(off, prompts[:1], 8, True), run(on, prompts[:1], 8, True)  # warm up
    t_off, t_on, same = [], [], True
    before = {k: v for k, v in on.stats.items() if isinstance(v, (int, float))}
    for _ in range(repeats):
        a, ref = run(off, prompts, max_tokens, batch1)
        b, got = run(on, prompts, max_tokens, batch1)
        t_off.append(a), t_on.append(b)
        same &= got == ref
    st = on.stats
    prop = st["spec_proposed_tokens"] - before["spec_proposed_tokens"]
    acc = st["spec_accepted_tokens"] - before["spec_accepted_tokens"]
    toks = sum(len(t) for t in ref)
    mo, mn = statistics.median(t_off), statistics.median(t_on)
    bo, bn = min(t_off), min(t_on)
    return {
        "case": name, "prompts": len(prompts), "batch": 1 if batch1 else len(prompts),
        "generated_tokens": toks, "off_s": mo, "on_s": mn, "off_tok_s": toks / mo, "on_tok_s": toks / mn,
        "speedup": mo / mn, "speedup_min": bo / bn, "first_run_speedup": t_off[0] / t_on[0], "identical_output": same, "proposed": prop, "accepted": acc,
        "acceptance_rate": acc / prop if prop else 0.0, "spec_steps": st["spec_steps"],
        "auto_max_batch_size": st["spec_auto_max_batch_size"], "all_off_s": t_off, "all_on_s": t_on,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(MODELS / "docstring-13m"))
    ap.add_argument("--draft", default=str(MODELS / "docstring-draft-4m"))
    ap.add_argument("--batch1-prompts", type=int, default=6)
    ap.add_argument("--full-batch", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    off = LLM(a.model)
    tok = off.tokenizer
    fns = stdlib_functions(max(a.full_batch, a.batch1_prompts))
    doc_prompts = [tok.apply_chat_template([{"role": "code", "content": c}]) for c, _ in fns]
    # The model's own earlier documentation of each function, put back into the prompt.
    first = off.generate(doc_prompts[: a.batch1_prompts], SamplingParams(max_tokens=a.max_tokens))
    repeat_prompts = [tok.apply_chat_template([{"role": "code", "content": c}, {"role": "doc", "content": o.text},
                                               {"role": "code", "content": c}])
                      for (c, _), o in zip(fns, first)]
    cont = off.generate(doc_prompts[: a.batch1_prompts], SamplingParams(max_tokens=192, ignore_eos=True))
    loop_prompts = [p + o.text for p, o in zip(doc_prompts, cont)]
    ngram1 = LLM(a.model, speculative_method="ngram", speculative_max_batch_size=1)
    ngram_auto = LLM(a.model, speculative_method="ngram")
    draft1 = LLM(a.model, speculative_method="draft", speculative_draft_model=a.draft, speculative_max_batch_size=1)
    draft_auto = LLM(a.model, speculative_method="draft", speculative_draft_model=a.draft)
    b1, full = a.batch1_prompts, a.full_batch
    rows = [
        compare("prompt lookup, repeat prompts, batch 1", off, ngram1, repeat_prompts[:b1], a.max_tokens, True, a.repeats),
        compare("prompt lookup, docstring prompts, batch 1", off, ngram1, doc_prompts[:b1], a.max_tokens, True, a.repeats),
        compare("prompt lookup, loop prompts, batch 1", off, ngram1, loop_prompts[:b1], a.max_tokens, True, a.repeats),
        compare("draft 4m, docstring prompts, batch 1", off, draft1, doc_prompts[:b1], a.max_tokens, True, a.repeats),
        compare("prompt lookup auto, full batch", off, ngram_auto, doc_prompts[:full], a.max_tokens, False, a.repeats),
        compare("draft 4m auto, full batch", off, draft_auto, doc_prompts[:full], a.max_tokens, False, a.repeats),
    ]
    print(f"\nCPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; model {pathlib.Path(a.model).name}, draft {pathlib.Path(a.draft).name}, "
          f"greedy, max_tokens {a.max_tokens}, median of {a.repeats}")
    hdr = (f"{'case':44s} {'batch':>5s} {'off tok/s':>9s} {'on tok/s':>9s} {'speedup':>7s} {'min':>5s} {'1st':>5s} "
           f"{'accept':>6s} {'same':>5s} {'auto max B':>10s}")
    print(hdr + "\n" + "-" * len(hdr))
    for r in rows:
        print(f"{r['case']:44s} {r['batch']:5d} {r['off_tok_s']:9.1f} {r['on_tok_s']:9.1f} {r['speedup']:7.2f} "
              f"{r['speedup_min']:5.2f} {r['first_run_speedup']:5.2f} {r['acceptance_rate']:6.2f} {str(r['identical_output']):>5s} {str(r['auto_max_batch_size']):>10s}")
    if a.json:
        meta = {"device": "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
                "model": a.model, "draft": a.draft, "max_tokens": a.max_tokens, "repeats": a.repeats,
                "date": time.strftime("%Y-%m-%d %H:%M")}
        pathlib.Path(a.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
