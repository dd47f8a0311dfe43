"""The pipeline as it was before the dataflow scheduler: waves with a barrier after each batch.

Kept only as the reference the dataflow pipeline is compared with (same stored results on a
fixture project). `cfg.batch_size` here means chunks per submission (0: a whole wave at once).
"""
from __future__ import annotations

import time
import uuid

from app.docgen.checks import check_doc, failure_feedback
from app.docgen.pipeline import Execution, Job, RunConfig, build_context, fit_context
from app.docgen.planner import Plan
from app.docgen.progress import Observer
from app.docgen.store import Store, StoredResult, code_hash, first_sentence, result_key, storable
from app.llm.types import DocGenerator, DocResult


async def execute_waves(plan: Plan, generator: DocGenerator, store: Store, cfg: RunConfig,
                        observer: Observer) -> Execution:
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
