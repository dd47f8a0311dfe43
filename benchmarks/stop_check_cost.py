"""Micro-benchmark: the engine's per-step stop-string check at 100 vs 2,000 output tokens.

The check runs once per generated token of every request with stop strings. Before issue 15 it
decoded the whole output each step (stop_strings.find_stop); now it feeds one token to an
incremental detokenizer (RequestTexts.apply_stop_strings). Per-step cost is timed over the steps that
take a request from N-50 to N output tokens, for N = 100 and N = 2,000, with a stop string that
never appears (the common case: the check runs and finds nothing). No model is loaded: only the
tokenizer and the engine's own check.

    python benchmarks/stop_check_cost.py [--tokenizer /work/shared/models/docstring-13m] [--json out.json]
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app.engine.stop_strings import find_stop  # noqa: E402
from app.engine.request_texts import RequestTexts  # noqa: E402
from app.engine.sampling_params import SamplingParams  # noqa: E402
from app.engine.sequence import Sequence  # noqa: E402

STOPS = ["<never appears>", "\n\n\n\n\n\n"]
WINDOW = 50  # steps timed per length


def load_tokenizer(path: str | None):
    if path and os.path.isdir(path):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path), path
    from benchmarks.random_checkpoint import build_tokenizer

    return build_tokenizer(None, vocab_size=4096), "a byte-level BPE trained on the standard library (4096 ids)"


def output_ids(tok, n: int) -> list[int]:
    """n tokens of real text (this repository's engine source), as a model would emit them."""
    import app.engine.llm as src

    text = inspect.getsource(src) * 4
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) >= n, "not enough text for the requested length"
    return ids[:n]


class _EngineTok:
    """The engine tokenizer's interface that RequestTexts uses, over a transformers tokenizer."""

    def __init__(self, tok):
        self.tok, self.eos_token_ids = tok, ()

    def decode(self, ids, skip):
        return self.tok.decode(ids, skip_special_tokens=skip)


def time_incremental(tok, ids: list[int]) -> float:
    texts = RequestTexts(_EngineTok(tok))
    seq = Sequence([1, 2, 3], SamplingParams(max_tokens=len(ids) + 1, stop=STOPS))
    for t in ids[:-WINDOW]:  # the request's history, checked step by step as in the engine
        seq.token_ids.append(t)
        texts.apply_stop_strings(seq, 1)
    t0 = time.perf_counter()
    for t in ids[-WINDOW:]:
        seq.token_ids.append(t)
        assert not texts.apply_stop_strings(seq, 1)
    return (time.perf_counter() - t0) / WINDOW


def time_full_decode(tok, ids: list[int]) -> float:
    decode = lambda x: tok.decode(x, skip_special_tokens=True)  # noqa: E731
    t0 = time.perf_counter()
    for k in range(len(ids) - WINDOW + 1, len(ids) + 1):
        assert find_stop(decode, ids[:k], 1, STOPS) is None
    return (time.perf_counter() - t0) / WINDOW


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default="/work/shared/models/docstring-13m")
    ap.add_argument("--lengths", default="100,2000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    tok, name = load_tokenizer(a.tokenizer)
    rows = []
    for n in [int(x) for x in a.lengths.split(",")]:
        ids = output_ids(tok, n)
        inc = min(time_incremental(tok, ids) for _ in range(a.repeats))
        full = min(time_full_decode(tok, ids) for _ in range(a.repeats))
        rows.append({"output_tokens": n, "incremental_us_per_step": inc * 1e6, "full_decode_us_per_step": full * 1e6})
    print(f"tokenizer: {name}; stop strings that never appear; per-step cost over the last {WINDOW} steps (best of {a.repeats})")
    print(f"{'output tokens':>14} {'incremental (us/step)':>22} {'full decode (us/step)':>22}")
    for r in rows:
        print(f"{r['output_tokens']:>14} {r['incremental_us_per_step']:>22.1f} {r['full_decode_us_per_step']:>22.1f}")
    if len(rows) >= 2:
        print(f"growth from {rows[0]['output_tokens']} to {rows[-1]['output_tokens']} tokens: incremental "
              f"x{rows[-1]['incremental_us_per_step'] / rows[0]['incremental_us_per_step']:.2f}, full decode "
              f"x{rows[-1]['full_decode_us_per_step'] / rows[0]['full_decode_us_per_step']:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"tokenizer": name, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
