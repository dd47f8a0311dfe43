"""What a run would take from the store and what it would generate, without a model.

Walks the waves as `pipeline.execute` does: each unit's context is built from the results its
callees would have, its key computed, and the store looked up. A unit whose callee (or part) must
be regenerated sees that callee's new summary, which nobody knows before the run: if the unit's
key hits with the callee's previous result it is counted as `uncertain` (reused when the summary
comes out the same, regenerated otherwise), else as to generate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from app.docgen.pipeline import build_context
from app.docgen.planner import Plan
from app.docgen.store import Store, StoredResult, result_key


@dataclass
class StoreStatus:
    cached: int = 0  # units whose result the store holds, whatever else changes
    to_generate: int = 0  # distinct generations the run will make at least
    uncertain: int = 0  # reused if their changed callees' summaries stay the same, else generated
    twins: int = 0  # units that share another unit's generation (identical code and context)
    to_generate_uids: list[str] = field(default_factory=list)

    @property
    def at_most(self) -> int:
        return self.to_generate + self.uncertain


def _previous(store: Store | None, uid: str) -> StoredResult | None:
    row = store.unit_row(uid) if store is not None else None
    return store.get(row[0]) if row is not None else None


def store_status(plan: Plan, store: Store | None, model_id: str, prompt_version: str, sampling: dict) -> StoreStatus:
    st = StoreStatus()
    docs: dict[str, StoredResult] = {}  # what the run will see: stored results, or the previous ones
    changed: set[str] = set()  # units regenerated for sure or maybe: their summary may change
    for wave in plan.schedule.waves:
        keys: set[str] = set()
        earlier = dict(docs)  # as the run: context sees earlier waves only
        for uid in wave:
            unit = plan.by_uid[uid]
            context = build_context(unit, plan, earlier)
            key = result_key(unit.key_text, context, prompt_version, model_id, sampling)
            stored = store.get(key) if store is not None else None
            depends_on_changed = bool((set(unit.parts) | set(plan.schedule.deps.get(uid, ()))) & changed)
            if stored is not None:
                docs[uid] = stored
                if depends_on_changed:
                    st.uncertain += 1
                    changed.add(uid)
                else:
                    st.cached += 1
                continue
            changed.add(uid)
            previous = _previous(store, uid)
            if previous is not None:
                docs[uid] = previous  # callers' contexts are computed with it; the run may produce another
            if key in keys:
                st.twins += 1
                continue
            keys.add(key)
            st.to_generate += 1
            st.to_generate_uids.append(uid)
    return st
