"""How full can docgen keep the engine on a project, with its dependencies honoured? (issue 15)

No model runs. The project is planned as `docgen run` plans it (the model's tokenizer sizes the
chunks), then an idealised engine is simulated step by step: at most `--slots` sequences per step,
every generation `--tokens` steps long (a retry `--retry-tokens`), no prefill cost, every step the
same length. Two schedules of the same generations are compared:

- engine alone: every prompt (first attempts and retries) queued at once, as the benchmark's
  engine-alone phase does;
- docgen: a component starts when its dependencies are done, a retry when its first attempt ends;
  ready generations enter in the order `--order` says (`height`: longest chain of dependents first,
  `fifo`: arrival order).

The ratio of their step counts is what docgen/engine tokens/s would be if step time did not depend
on batch size (on a CPU a smaller batch steps faster, so the real ratio is higher than this bound
when the batch is small; with prefill costs, see BENCHMARKS.md). Also printed: the critical path in
generations (with and without retries), the units per dependency level, and the mean batch.

    python benchmarks/docgen_bound.py --project /usr/lib/python3.11/http --retry-fraction 0.69
"""
from __future__ import annotations

import argparse
import heapq
import os
import random
import sys
import sysconfig

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app.docgen.planner import PlanConfig, make_plan  # noqa: E402


def plan_of(project: str, model: str, max_seq_length: int, max_new_tokens: int):
    from dataclasses import replace

    from app.docgen.runner import calibrate
    from app.docgen.tokencount import load_counter

    cfg = PlanConfig(max_seq_length=max_seq_length, max_new_tokens=max_new_tokens)
    plan = make_plan(project, cfg)
    counter, why = load_counter(model, max_seq_length)
    if counter is None:
        print(f"note: {why}; chunks sized with the default estimate")
        return plan
    return make_plan(project, replace(calibrate(cfg, plan, counter), max_seq_length=max_seq_length))


def graph(plan):
    """Components (callees first), each one's dependents, and its height (longest chain above it)."""
    comps = plan.schedule.components
    comp_of = {u: i for i, c in enumerate(comps) for u in c}
    dependents: list[set[int]] = [set() for _ in comps]
    waiting = [0] * len(comps)
    for i, c in enumerate(comps):
        outside = {comp_of[d] for u in c for d in plan.schedule.deps.get(u, ()) if d in comp_of and comp_of[d] != i}
        waiting[i] = len(outside)
        for j in outside:
            dependents[j].add(i)
    height = [0] * len(comps)
    for i in reversed(range(len(comps))):
        height[i] = 1 + max((height[j] for j in dependents[i]), default=-1)
    return comps, dependents, waiting, height


def critical_path(comps, dependents, height, cost) -> int:
    """Longest chain of components, each weighing its slowest member's `cost` (steps)."""
    longest = [0] * len(comps)
    for i in reversed(range(len(comps))):
        longest[i] = max(cost(u) for u in comps[i]) + max((longest[j] for j in dependents[i]), default=0)
    return max(longest, default=0)


def simulate(comps, dependents, waiting, height, retried: set, a) -> tuple[int, float]:
    """Docgen's dataflow on the idealised engine: (steps, mean sequences per step)."""
    waiting = list(waiting)
    left = [len(c) for c in comps]
    comp_of = {u: i for i, c in enumerate(comps) for u in c}
    ready: list = []
    arrival = 0

    def push(uid: str, tokens: int) -> None:
        nonlocal arrival
        arrival += 1
        prio = -height[comp_of[uid]] if a.order == "height" else 0
        heapq.heappush(ready, (prio, arrival, uid, tokens, uid in retried and tokens == a.tokens))

    for i, n in enumerate(waiting):
        if n == 0:
            for u in comps[i]:
                push(u, a.tokens)
    running: list[list] = []  # [steps left, uid, retry follows]
    steps = seqs = 0
    while ready or running:
        while ready and len(running) < a.slots:
            _, _, uid, tokens, again = heapq.heappop(ready)
            running.append([tokens, uid, again])
        steps += 1
        seqs += len(running)
        still = []
        for r in running:
            r[0] -= 1
            if r[0] > 0:
                still.append(r)
            elif r[2]:
                push(r[1], a.retry_tokens)
            else:
                i = comp_of[r[1]]
                left[i] -= 1
                if left[i] == 0:
                    for j in dependents[i]:
                        waiting[j] -= 1
                        if waiting[j] == 0:
                            for u in comps[j]:
                                push(u, a.tokens)
        running = still
    return steps, seqs / max(1, steps)


def alone(n_first: int, n_retry: int, a) -> tuple[int, float]:
    """Every generation queued at once; longest first does not matter much, FCFS as the engine does."""
    queue = [a.tokens] * n_first + [a.retry_tokens] * n_retry
    running: list[int] = []
    steps = seqs = 0
    k = 0
    while k < len(queue) or running:
        while k < len(queue) and len(running) < a.slots:
            running.append(queue[k])
            k += 1
        steps += 1
        seqs += len(running)
        running = [r - 1 for r in running if r > 1]
    return steps, seqs / max(1, steps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", default=os.path.join(sysconfig.get_paths()["stdlib"], "http"))
    ap.add_argument("--model", default="/work/shared/models/docstring-13m")
    ap.add_argument("--max-seq-length", type=int, default=1024)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--slots", type=int, default=64, help="the engine's max_num_seqs")
    ap.add_argument("--tokens", type=int, default=16, help="steps per first attempt")
    ap.add_argument("--retry-tokens", type=int, default=32, help="steps per retry (a cut-off doc gets 2x)")
    ap.add_argument("--retry-fraction", type=float, nargs="*", default=[0.0, 0.25, 0.5, 0.69])
    ap.add_argument("--order", choices=["height", "fifo"], nargs="*", default=["height", "fifo"])
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args()
    plan = plan_of(a.project, a.model, a.max_seq_length, a.max_new_tokens)
    comps, dependents, waiting, height = graph(plan)
    units = [u for c in comps for u in c]
    levels = [len(w) for w in plan.schedule.waves]
    print(f"{a.project}: {len(units)} chunks, {len(comps)} components, {len(levels)} levels; "
          f"units per level: {levels}")
    roots = sum(len(c) for i, c in enumerate(comps) if waiting[i] == 0)
    print(f"ready at the start: {roots} chunks; engine slots {a.slots}; first attempt {a.tokens} steps, retry "
          f"{a.retry_tokens}")
    orders = a.order
    for p in a.retry_fraction:
        rows = {o: [] for o in orders}
        bound = []
        for seed in range(a.seeds if p > 0 else 1):
            rng = random.Random(seed)
            retried = {u for u in units if rng.random() < p}
            cp = critical_path(comps, dependents, height,
                               lambda u: a.tokens + (a.retry_tokens if u in retried else 0))
            al_steps, al_batch = alone(len(units), len(retried), a)
            bound.append((cp, al_steps, al_batch))
            for o in orders:
                a.order = o
                rows[o].append(simulate(comps, dependents, waiting, height, retried, a))
        cp = sum(b[0] for b in bound) / len(bound)
        al = sum(b[1] for b in bound) / len(bound)
        print(f"retry fraction {p:.2f}: critical path {cp:.0f} steps, engine alone {al:.0f} steps "
              f"(mean batch {sum(b[2] for b in bound) / len(bound):.1f}); best possible ratio "
              f"{al / max(al, cp):.2f}")
        for o in orders:
            st = sum(r[0] for r in rows[o]) / len(rows[o])
            mb = sum(r[1] for r in rows[o]) / len(rows[o])
            print(f"    docgen, {o:6} order: {st:.0f} steps, mean batch {mb:.1f}, ratio {al / st:.2f}")


if __name__ == "__main__":
    main()
