"""What a run would take from the store and what it would generate, without a model.

Walks the waves as `pipeline.execute` does: each unit's context is built from the results its
callees would have, its key computed, and the store looked up. A unit whose callee or part is not
stored gets a new context in the run (the callee's new summary), so it is counted as to generate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from app.docgen.pipeline import build_context
from app.docgen.planner import Plan
from app.docgen.store import Store, StoredResult, result_key


@dataclass
class StoreStatus:
    cached: int = 0  # units whose result the store holds
    to_generate: int = 0  # distinct generations the run would make
    twins: int = 0  # units that would share another unit's generation (identical code and context)
    to_generate_uids: list[str] = field(default_factory=list)


def store_status(plan: Plan, store: Store | None, model_id: str, prompt_version: str, sampling: dict) -> StoreStatus:
    st = StoreStatus()
    docs: dict[str, StoredResult] = {}
    pending: set[str] = set()
    for wave in plan.schedule.waves:
        keys: set[str] = set()
        for uid in wave:
            unit = plan.by_uid[uid]
            needs = set(unit.parts) | set(plan.schedule.deps.get(uid, ()))
            stored = None
            key = ""
            if not needs & pending:
                context = build_context(unit, plan, docs)
                key = result_key(unit.prompt_code or unit.code, context, prompt_version, model_id, sampling)
                stored = store.get(key) if store is not None else None
            if stored is not None:
                docs[uid] = stored
                st.cached += 1
                continue
            pending.add(uid)
            if key and key in keys:
                st.twins += 1
                continue
            keys.add(key or uid)
            st.to_generate += 1
            st.to_generate_uids.append(uid)
    return st
