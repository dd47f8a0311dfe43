"""`docgen estimate`: the plan `run` would make, what the store already holds, and a time range.
(`docgen check` lives in doccheck.py.)

The plan is made exactly as `run` makes it: the model's window (its config.json, up to 4096,
unless --max-seq-length is given) and, when its tokenizer is on this machine, the same exact
token counts (`runner.calibrate`), so chunk counts match a run's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.docgen.hardware import Hardware, context_window, model_config, model_size
from app.docgen.planner import PROMPT_OVERHEAD_TOKENS, Plan, PlanConfig, make_plan
from app.docgen.parts import estimate_tokens
from app.docgen.store import Store
from app.docgen.storestatus import StoreStatus, store_status
from app.docgen.timing import TimeRange, estimate_time
from app.docgen.walker import WalkConfig


@dataclass
class Estimate:
    files: int
    chunks: int
    waves: int
    window: int
    counted_with: str  # how chunk sizes were counted
    status: StoreStatus
    prompt_tokens: int  # of the chunks to generate
    new_tokens: int  # upper bound: chunks to generate x max_new_tokens
    params: int | None
    params_source: str
    time: TimeRange | None
    plan: Plan


def plan_like_run(path: str | Path, walk: WalkConfig, model: str, max_seq_length: int | None, max_new_tokens: int,
                  fast: bool = False) -> tuple[Plan, int, str]:
    """(plan, window, how tokens were counted), as `docgen run` would plan with this model."""
    from app.docgen.runner import calibrate
    from app.docgen.tokencount import load_counter

    window = context_window(model_config(model), max_seq_length)
    cfg = PlanConfig(walk=walk, max_seq_length=window, max_new_tokens=max_new_tokens, fast=fast)
    plan = make_plan(path, cfg)
    counter, why = load_counter(model, window) if plan.units else (None, "nothing to count")
    if counter is None:
        return plan, window, f"estimated from characters ({why}); a run counts exactly and may cut differently"
    tuned = calibrate(cfg, plan, counter)
    if tuned != cfg:
        plan = make_plan(path, tuned)
    return plan, window, f"exact, with the tokenizer of {model}"


def estimate(path: str | Path, walk: WalkConfig, model: str, model_id: str, max_seq_length: int | None,
             max_new_tokens: int, store_path: Path, prompt_version: str, sampling: dict, hw: Hardware,
             fast: bool = False) -> Estimate:
    plan, window, counted = plan_like_run(path, walk, model, max_seq_length, max_new_tokens, fast)
    store = Store(store_path) if store_path.exists() else None
    try:
        status = store_status(plan, store, model_id, prompt_version, sampling)
        measured = store.last_throughput(model_id) if store is not None else None
    finally:
        if store is not None:
            store.close()
    todo = [plan.by_uid[uid] for uid in status.to_generate_uids]
    prompt = sum(PROMPT_OVERHEAD_TOKENS + estimate_tokens(u.prompt_code or u.code, plan.chars_per_token) for u in todo)
    params, source = model_size(model)
    per_chunk_prompt = prompt // max(1, len(todo))
    low = estimate_time(status.to_generate, prompt, max_new_tokens, model, params, hw, measured)
    high = estimate_time(status.at_most, prompt + per_chunk_prompt * status.uncertain, max_new_tokens, model,
                         params, hw, measured)
    span = TimeRange(low.low, high.high, high.basis) if low is not None and high is not None else None
    return Estimate(files=len(plan.files), chunks=len(plan.units), waves=len(plan.schedule.waves), window=window,
                    counted_with=counted, status=status, prompt_tokens=prompt, new_tokens=len(todo) * max_new_tokens,
                    params=params, params_source=source, time=span, plan=plan)
