"""`docgen estimate`: files, chunks, tokens and a time estimate, from the plan and the store, no model.
(`docgen check` lives in doccheck.py.)"""
from __future__ import annotations

from dataclasses import dataclass

from app.docgen.parts import estimate_tokens
from app.docgen.planner import PROMPT_OVERHEAD_TOKENS, Plan
from app.docgen.store import Store


@dataclass
class Estimate:
    files: int
    chunks: int
    waves: int
    prompt_tokens: int
    new_tokens: int
    seconds: float | None
    basis: str


# Rough seconds per chunk when this machine has no measured run of the model yet.
DEFAULT_SECONDS_PER_CHUNK = {"gpu": 0.1, "cpu": 6.0}


def estimate(plan: Plan, max_new_tokens: int, model_id: str, store: Store | None, device: str) -> Estimate:
    prompt = sum(PROMPT_OVERHEAD_TOKENS + estimate_tokens(u.prompt_code or u.code) for u in plan.units)
    measured = store.last_throughput(model_id) if store is not None else None
    if measured is not None:
        per_chunk, basis = measured, f"measured {measured:.2f}s per chunk in an earlier run of {model_id} here"
    else:
        per_chunk = DEFAULT_SECONDS_PER_CHUNK[device]
        basis = (f"no earlier run of {model_id} on this machine; assuming ~{per_chunk}s per chunk on {device} "
                 "for a 7B model (rough; a first run measures it)")
    n = len(plan.units)
    return Estimate(files=len(plan.files), chunks=n, waves=len(plan.schedule.waves), prompt_tokens=prompt,
                    new_tokens=n * max_new_tokens, seconds=per_chunk * n, basis=basis)
