"""Run a plan through a generator: waves in dependency order, results into the store.

Per wave: build each unit's one-hop context (callee signatures with the summaries earlier waves
produced), compute its key, reuse stored results, and submit the rest in batches. After each
batch the outputs are checked; failures are retried once with the failure in the prompt, and
the batch is committed. A killed run therefore loses at most the batch in flight.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from app.docgen.checks import check_doc, failure_feedback
from app.docgen.planner import CONTEXT_BUDGET_TOKENS, Plan
from app.docgen.progress import Observer
from app.docgen.store import Store, StoredResult, code_hash, first_sentence, result_key, storable
from app.docgen.units import SourceUnit
from app.llm.types import DocGenerator, DocResult


@dataclass
class RunConfig:
    model_id: str
    prompt_version: str
    sampling: dict = field(default_factory=dict)  # settings that change the output (temperature, max tokens)
    batch_size: int = 64  # chunks per submission; 0 submits each wave whole
    resume: bool = True  # reuse stored results; False regenerates everything
    retry: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 0:
            raise ValueError("batch_size must be >= 0 (0 submits each wave as one batch)")


@dataclass
class Job:
    unit: SourceUnit
    key: str
    context: str


@dataclass
class Execution:
    run_id: str
    docs: dict[str, StoredResult] = field(default_factory=dict)  # uid -> final result
    generated: int = 0
    reused: int = 0
    retried: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # uid -> error message
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0


def build_context(unit: SourceUnit, plan: Plan, docs: dict[str, StoredResult]) -> str:
    """One hop: each dependency already documented, as `signature: summary`, within a token budget."""
    by_uid = plan.by_uid
    lines = []
    if unit.parts:
        lines.append("This code is long; its parts were documented separately:")
        for k, uid in enumerate(unit.parts, start=1):  # no line numbers: an edit above must not change the key
            if uid in docs:
                lines.append(f"- part {k} of {len(unit.parts)}: {docs[uid].summary}")
    callees = sorted(d for d in plan.schedule.deps.get(unit.uid, ()) if d not in unit.parts and d in docs)
    if callees:
        lines.append("It uses (documented already):")
        for uid in callees:
            dep = by_uid[uid]
            lines.append(f"- {dep.signature or dep.qualname}: {docs[uid].summary}")
    return fit_context("\n".join(lines), plan)


def fit_context(text: str, plan: Plan) -> str:
    """Cut prompt context to its token budget (estimated with the plan's characters per token)."""
    max_chars = int(CONTEXT_BUDGET_TOKENS * plan.chars_per_token)
    return text if len(text) <= max_chars else text[: max_chars - 4].rsplit("\n", 1)[0] + "\n..."


async def execute(plan: Plan, generator: DocGenerator, store: Store, cfg: RunConfig, observer: Observer) -> Execution:
    ex = Execution(run_id=uuid.uuid4().hex[:12])
    store.start_run(ex.run_id, cfg.model_id)
    waves = plan.schedule.waves
    observer.start(total=len(plan.units), waves=len(waves))
    for w, wave in enumerate(waves):
        jobs: list[Job] = []
        twins: dict[str, list[str]] = {}  # key -> uids of identical units waiting on the first one
        earlier = dict(ex.docs)  # context sees earlier waves only, as when nothing is reused (same keys)
        for uid in wave:
            unit = plan.by_uid[uid]
            context = build_context(unit, plan, earlier)
            key = result_key(unit.key_text, context, cfg.prompt_version, cfg.model_id,
                             cfg.sampling)
            stored = store.get(key) if cfg.resume else None
            if stored is not None:
                ex.docs[uid] = stored
                ex.reused += 1
                store.link_unit(uid, unit.path, unit.qualname, key, code_hash(unit.stable_code))
                observer.unit_done(uid, cached=True, flags=stored.flags)
            elif key in twins:
                twins[key].append(uid)
            else:
                twins[key] = []
                jobs.append(Job(unit, key, context))
        observer.wave(w + 1, len(waves), len(wave), len(jobs))
        size = cfg.batch_size or max(1, len(jobs))
        for i in range(0, len(jobs), size):
            await _run_batch(jobs[i:i + size], plan, generator, store, cfg, observer, ex)
        for job in jobs:  # identical code with identical context: one generation serves all
            for uid in twins[job.key]:
                if job.unit.uid in ex.docs:
                    twin = plan.by_uid[uid]
                    ex.docs[uid] = ex.docs[job.unit.uid]
                    ex.reused += 1
                    store.link_unit(uid, twin.path, twin.qualname, job.key, code_hash(twin.stable_code))
                    observer.unit_done(uid, cached=True, flags=ex.docs[uid].flags)
    observer.message("all waves done")
    return ex


async def _run_batch(batch: list[Job], plan: Plan, generator: DocGenerator, store: Store, cfg: RunConfig,
                     observer: Observer, ex: Execution) -> None:
    t0 = time.perf_counter()
    observer.batch_start(len(batch))
    results = await generator.generate_batch_async([j.unit.to_chunk(j.key, j.context) for j in batch])
    final: list[tuple[Job, DocResult, list[dict], int]] = []
    retry: list[tuple[Job, DocResult, list[dict]]] = []
    for job, res in zip(batch, results):
        if not res.ok:
            ex.errors[job.unit.uid] = res.error or "unknown error"
            observer.failure("error")
            continue
        chk = check_doc(job.unit, res.text, res.finish_reason, plan.known_identifiers)
        if chk.ok or not cfg.retry:
            final.append((job, res, chk.failures, 1))
        else:
            retry.append((job, res, chk.failures))
    if retry:
        ex.retried += len(retry)
        observer.batch_start(len(retry), retry=True)
        # The failure note goes first, so the budget cut drops callee context rather than it.
        chunks = [j.unit.to_chunk(j.key, fit_context(failure_feedback(f) + ("\n\n" + j.context if j.context else ""),
                                                     plan)) for j, _, f in retry]
        second = await generator.generate_batch_async(chunks)
        for (job, first, failures), res in zip(retry, second):
            if res.ok:
                chk = check_doc(job.unit, res.text, res.finish_reason, plan.known_identifiers)
                final.append((job, res, chk.failures, 2))
            else:  # the retry itself failed: keep the first answer, flagged
                final.append((job, first, failures, 2))
    items = []
    for job, res, failures, attempts in final:
        text = storable(res.text)  # a lone surrogate would break the store, the pages and the sources
        stored = StoredResult(key=job.key, text=text.strip(), summary=first_sentence(text), flags=failures,
                              model_id=cfg.model_id, prompt_tokens=res.prompt_tokens,
                              completion_tokens=res.completion_tokens, finish_reason=res.finish_reason,
                              attempts=attempts)
        items.append((stored, job.unit.uid, job.unit.path, job.unit.qualname, code_hash(job.unit.stable_code)))
        ex.docs[job.unit.uid] = stored
        ex.prompt_tokens += res.prompt_tokens
        ex.completion_tokens += res.completion_tokens
    store.put_many(items, ex.run_id, replace=not cfg.resume)
    ex.generated += len(items)
    ex.generation_seconds += time.perf_counter() - t0
    for stored, uid, *_ in items:
        observer.unit_done(uid, cached=False, flags=stored.flags, tokens=stored.completion_tokens)
    observer.batch_done(ex.completion_tokens, ex.generation_seconds)
