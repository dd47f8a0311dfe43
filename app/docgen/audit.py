"""`docgen check` and `docgen estimate`: questions answered from the plan and the store, no model.

check: public code without docs (in the source or in the store) and docs that are stale (the
code changed since its doc was generated, or an in-source docstring names parameters the
signature no longer has). estimate: files, chunks, tokens and a time estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from app.docgen.checks import IGNORED_PARAMS, documented_params
from app.docgen.parts import estimate_tokens
from app.docgen.planner import PROMPT_OVERHEAD_TOKENS, Plan
from app.docgen.store import Store, code_hash
from app.docgen.units import CALLABLE_KINDS, MODULE


@dataclass
class CheckOutcome:
    missing: list[str] = field(default_factory=list)  # uids
    stale: list[tuple[str, str]] = field(default_factory=list)  # (uid, why)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.stale


def check_docs(plan: Plan, store: Store | None) -> CheckOutcome:
    out = CheckOutcome()
    for u in plan.units:
        if not u.is_public or u.qualname == MODULE:
            continue
        out.checked += 1
        if u.existing_doc:
            if u.kind in CALLABLE_KINDS and u.language == "python":
                documented, _ = documented_params(u.existing_doc)
                extra = sorted(documented - ({p.lstrip("*") for p in u.params} - IGNORED_PARAMS))
                if extra:
                    out.stale.append((u.uid, f"its docstring documents {', '.join(extra)}, not in the signature"))
            continue
        row = store.unit_row(u.uid) if store is not None else None
        if row is None:
            out.missing.append(u.uid)
        elif row[1] != code_hash(u.stable_code):
            out.stale.append((u.uid, "the code changed since its doc was generated (rerun docgen run)"))
    return out


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
