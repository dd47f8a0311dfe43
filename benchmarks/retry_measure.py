"""Retry benefit (issue 13): run `docgen run ...` from a given source tree (main's or a branch's),
counting every generation's tokens (discarded first attempts too) and each chunk's failing checks per
attempt, with the same instrument for both trees (main's report counts only the kept answers).

    python benchmarks/retry_measure.py SRC_TREE run DIR --out DIR/docs/api --model M --plain ...

Prints one line `MEASURE {json}`: generations, tokens, retried chunks, per check retried/fixed.
"""
import json
import sys
import time

src = sys.argv[1]
sys.path.insert(0, src)
import app.docgen.pipeline as pl
calls, tok = [0], [0, 0]
checks: dict = {}
real_call, real_check = pl._call, pl.check_doc
async def call(gen, chunk):
    res = await real_call(gen, chunk)
    calls[0] += 1; tok[0] += res.prompt_tokens; tok[1] += res.completion_tokens
    return res
def check(unit, text, finish, known):
    r = real_check(unit, text, finish, known)
    checks.setdefault(unit.uid, []).append(sorted({f["cause"] for f in r.failures}))
    return r
pl._call, pl.check_doc = call, check
from app.cli import main
t0 = time.perf_counter()
try:
    rc = main(sys.argv[2:])
except SystemExit as e:
    rc = e.code
wall = time.perf_counter() - t0
per = {}
for uid, seq in checks.items():
    if len(seq) >= 2:
        for c in seq[0]:
            d = per.setdefault(c, {"retried": 0, "fixed": 0})
            d["retried"] += 1; d["fixed"] += c not in seq[1]
print("MEASURE", json.dumps({"rc": rc, "wall_s": round(wall, 1), "generations": calls[0], "prompt_tokens": tok[0],
      "completion_tokens": tok[1], "retried_chunks": sum(len(s) >= 2 for s in checks.values()), "per_check": per}))
