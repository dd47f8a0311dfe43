"""Run a plan through a generator as a dependency-driven stream; results into the store.

A component of the dependency graph (one unit, or a cycle of units) starts the moment every
component it depends on has finished. Its members' one-hop contexts are built from what those
dependencies produced (members of a cycle never see each other), their keys computed, and stored
results reused; every other chunk goes to the generator at once, one `generate_async` call each,
so the engine's scheduler, not docgen, decides what runs together; each chunk carries a priority
(the longest chain of components waiting on it), which an engine that schedules by priority uses
to admit the critical path first. A doc that fails its checks
is retried the moment the check fails, as retry.py decides (a cut-off doc with a larger limit). Finished results are committed in groups (commit.py), so a
killed run loses at most the last group. `RunConfig.batch_size` caps the chunks in flight.
"""
from __future__ import annotations

import asyncio
import heapq
import math
import time
import uuid
from dataclasses import dataclass, field

from app.docgen.checks import check_doc, failure_feedback
from app.docgen.commit import GroupCommit
from app.docgen.gate import PriorityGate
from app.docgen.generator_source import GeneratorSource
from app.docgen.planner import CONTEXT_BUDGET_TOKENS, Plan
from app.docgen.progress import Observer
from app.docgen.retry import CUT_OFF, GIVE_UP_AFTER, RetryStats, decide_retry
from app.docgen.store import Store, StoredResult, code_hash, first_sentence, result_key, storable
from app.docgen.units import SourceUnit
from app.llm.types import CodeChunk, DocGenerator, DocResult

# Chunks in flight when no cap is given. A generator whose engine admits requests by priority
# (`schedules_by_priority`: each chunk carries its critical-path priority) gets every ready chunk,
# up to this many: its own queue puts the critical path first. Any other generator gets a few times
# its batch (`max_concurrency`), so its first-come-first-served queue never runs dry yet stays short
# enough for critical-path chunks to get in early (gate.py); this many when it does not say.
DEFAULT_MAX_IN_FLIGHT = 1024
IN_FLIGHT_PER_ENGINE_SEQ = 2


@dataclass
class RunConfig:
    model_id: str
    prompt_version: str
    sampling: dict = field(default_factory=dict)  # settings that change the output (temperature, max tokens)
    batch_size: int = 0  # at most this many chunks in flight; 0: chosen from the generator
    resume: bool = True  # reuse stored results; False regenerates everything
    retry: bool = True
    retry_give_up_after: int = GIVE_UP_AFTER  # stop retrying a check whose first this-many retries fixed none; 0: never
    commit_every: int = 32  # a group commit holds at most this many results ...
    commit_seconds: float = 1.0  # ... or is written once its oldest result has waited this long

    def __post_init__(self) -> None:
        if self.batch_size < 0:
            raise ValueError("batch_size must be >= 0 (the cap on chunks in flight; 0 chooses one)")
        if self.retry_give_up_after < 0:
            raise ValueError("retry_give_up_after must be >= 0 (0: never stop retrying a check)")
        if self.commit_every < 1 or self.commit_seconds <= 0:
            raise ValueError("commit_every must be >= 1 and commit_seconds > 0")

    @property
    def max_in_flight(self) -> int:
        return self.batch_size or DEFAULT_MAX_IN_FLIGHT


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
    retry_stats: RetryStats = field(default_factory=RetryStats)  # per check: retried, fixed, not retried
    errors: dict[str, str] = field(default_factory=dict)  # uid -> error message
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0  # wall time with at least one chunk in flight
    first_commit_seconds: float | None = None  # from the start of execute to the first stored result
    max_in_flight: int = 0  # the most chunks in flight at once
    commits: int = 0


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


async def execute(plan: Plan, generator: DocGenerator | GeneratorSource, store: Store, cfg: RunConfig,
                  observer: Observer) -> Execution:
    """Document every unit of `plan`. `generator` may be a loaded generator or a GeneratorSource,
    which is loaded only when the first chunk has no stored result."""
    source = generator if isinstance(generator, GeneratorSource) else GeneratorSource.ready(generator)
    ex = Execution(run_id=uuid.uuid4().hex[:12])
    store.start_run(ex.run_id, cfg.model_id)
    observer.start(total=len(plan.units), waves=len(plan.schedule.waves))
    await _Flow(plan, source, store, cfg, observer, ex).run()
    observer.message("all chunks done")
    return ex


class _Flow:
    """The dataflow state of one execution: which components wait on how many others."""

    def __init__(self, plan: Plan, source: GeneratorSource, store: Store, cfg: RunConfig, observer: Observer,
                 ex: Execution) -> None:
        self.plan, self.source, self.store, self.cfg, self.observer, self.ex = plan, source, store, cfg, observer, ex
        self.comps = plan.schedule.components
        self.comp_of = {uid: i for i, comp in enumerate(self.comps) for uid in comp}
        self.waiting_on = [0] * len(self.comps)  # unfinished components each one depends on
        self.dependents: list[list[int]] = [[] for _ in self.comps]
        for i, comp in enumerate(self.comps):
            outside = {self.comp_of[d] for uid in comp for d in plan.schedule.deps.get(uid, ())
                       if d in self.comp_of and self.comp_of[d] != i}
            self.waiting_on[i] = len(outside)
            for j in outside:
                self.dependents[j].append(i)
        self.left = [len(comp) for comp in self.comps]  # unfinished members per component
        self.by_key: dict[str, StoredResult] = {}  # this run's results: identical chunks reuse them
        self.twins: dict[str, list[SourceUnit]] = {}  # key in flight -> identical units waiting for it
        self.tasks: set[asyncio.Task] = set()
        self.gate = PriorityGate(cfg.max_in_flight)
        self.height = self._heights()  # components above each one: its chunks' priority at the gate
        self.sized = False  # the cap follows the generator's own concurrency once it is loaded
        # Components whose dependencies are all done, as a heap: the most work waiting above first.
        self.ready: list[tuple[int, int]] = [(-self.height[i], i) for i, n in enumerate(self.waiting_on) if n == 0]
        heapq.heapify(self.ready)
        self.commit = GroupCommit(store, ex.run_id, replace=not cfg.resume, every=cfg.commit_every,
                                  seconds=cfg.commit_seconds)
        self.t0 = time.perf_counter()
        self.in_flight = 0
        self.busy_since: float | None = None

    def _heights(self) -> list[int]:
        """Longest chain of dependents above each component (components come callees first, so
        every dependent has a larger index and is done before its dependencies here)."""
        height = [0] * len(self.comps)
        for i in reversed(range(len(self.comps))):
            height[i] = 1 + max((height[j] for j in self.dependents[i]), default=-1)
        return height

    async def run(self) -> None:
        self._drain()
        if self.tasks:
            self.observer.message(f"{self.ex.reused} chunks reused from the store; generating {len(self.tasks)} "
                                  "ready chunks, the rest as soon as what they depend on is done")
        ticker = asyncio.ensure_future(self._tick())
        try:
            while self.tasks:
                done, _ = await asyncio.wait(set(self.tasks), return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    self.tasks.discard(t)
                    t.result()  # only a failure to load the generator gets here; it ends the run
        except BaseException:
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            raise
        finally:
            ticker.cancel()
            self._flush()
        assert not any(self.left), "a component never started: the schedule is not a DAG of components"

    # ----- scheduling ------------------------------------------------------------------------
    def _drain(self) -> None:
        """Start every ready component (a loop, not recursion: chains of reused results are long)."""
        while self.ready:
            self._start(heapq.heappop(self.ready)[1])

    def _start(self, i: int) -> None:
        units = [self.plan.by_uid[uid] for uid in self.comps[i]]
        # All contexts first: a member of a cycle must not see a sibling that happens to be stored.
        contexts = [build_context(u, self.plan, self.ex.docs) for u in units]
        for unit, context in zip(units, contexts):
            cfg = self.cfg
            key = result_key(unit.key_text, context, cfg.prompt_version, cfg.model_id, cfg.sampling)
            if key in self.by_key:
                self._reuse(unit, key, self.by_key[key])
            elif key in self.twins:
                self.twins[key].append(unit)
            else:
                stored = self.store.get(key) if cfg.resume else None
                if stored is not None:
                    self._reuse(unit, key, stored)
                else:
                    self.twins[key] = []
                    task = asyncio.ensure_future(self._run_job(Job(unit, key, context)))
                    self.tasks.add(task)

    def _unit_finished(self, uid: str) -> None:
        i = self.comp_of[uid]
        self.left[i] -= 1
        if self.left[i] == 0:
            for j in self.dependents[i]:
                self.waiting_on[j] -= 1
                if self.waiting_on[j] == 0:
                    heapq.heappush(self.ready, (-self.height[j], j))

    def _reuse(self, unit: SourceUnit, key: str, stored: StoredResult) -> None:
        self.ex.docs[unit.uid] = stored
        self.ex.reused += 1
        self._committed(self.commit.add_link(unit.uid, unit.path, unit.qualname, key, code_hash(unit.stable_code)))
        self.observer.unit_done(unit.uid, cached=True, flags=stored.flags)
        self._unit_finished(unit.uid)

    # ----- one chunk -------------------------------------------------------------------------
    async def _run_job(self, job: Job) -> None:
        gen = await self._generator()  # before the gate: chunks waiting for the model hold no slot
        await self.gate.acquire(self._priority(job, retry=False))  # most work waiting on it first
        try:
            self._busy(+1)
            try:
                final = await self._generate(gen, job)
            finally:
                self._busy(-1)
            self._finish(job, final)
            self._drain()  # the chunks this one unblocked queue at the gate before its slot is handed on
        finally:
            self.gate.release()

    def _priority(self, job: Job, retry: bool) -> int:
        """Lower first: the longest chain of components waiting on this chunk first; among equal
        chains a retry first (its dependents have waited one generation already)."""
        return -(2 * self.height[self.comp_of[job.unit.uid]] + (1 if retry else 0))

    async def _generator(self) -> DocGenerator:
        """The first miss loads the model (a load error ends the run); then the cap is sized to it."""
        gen = await self.source.get()
        if not self.sized:
            self.sized = True
            n = getattr(gen, "max_concurrency", None)
            by_priority = getattr(gen, "schedules_by_priority", False) is True
            if not self.cfg.batch_size and isinstance(n, int) and n > 0 and not by_priority:
                self.gate.resize(IN_FLIGHT_PER_ENGINE_SEQ * n)
        return gen

    async def _generate(self, gen: DocGenerator, job: Job) -> tuple[DocResult, list[dict], int] | None:
        plan, unit = self.plan, job.unit
        first_chunk = unit.to_chunk(job.key, job.context)
        first_chunk.priority = self._priority(job, retry=False)
        res = await _call(gen, first_chunk)
        if not res.ok:
            self.ex.errors[unit.uid] = res.error or "unknown error"
            self.observer.failure("error")
            return None
        chk = check_doc(unit, res.text, res.finish_reason, plan.known_identifiers)
        if chk.ok or not self.cfg.retry:
            return res, chk.failures, 1
        first = {f["cause"] for f in chk.failures}
        # The failure note goes first, so the budget cut drops callee context rather than it.
        note = fit_context(failure_feedback(chk.failures) + ("\n\n" + job.context if job.context else ""), plan)
        chunk = unit.to_chunk(job.key, note)  # the same key: a retry never changes where the result is stored
        hopeless = self.ex.retry_stats.hopeless(self.cfg.retry_give_up_after)
        decision = decide_retry(first, self._limit(gen), getattr(gen, "max_seq_length", None),
                                self._prompt_tokens(gen, chunk, res, len(note) - len(job.context)), hopeless)
        if not decision.retry:
            self.ex.retry_stats.skipped(first)
            said = set(first) if all(c in hopeless for c in first) else {CUT_OFF}  # the checks the reason is about
            return res, [dict(f, message=f"{f['message']}; {decision.reason}") if f["cause"] in said else f
                         for f in chk.failures], 1
        self.ex.retried += 1
        chunk.max_new_tokens = decision.max_new_tokens
        chunk.priority = self._priority(job, retry=True)
        second = await _call(gen, chunk)
        if not second.ok:
            self.ex.retry_stats.record(first, None)
            return res, chk.failures, 2  # the retry itself failed: keep the first answer, flagged
        self.ex.prompt_tokens += res.prompt_tokens  # the discarded first answer was work done too
        self.ex.completion_tokens += res.completion_tokens
        failures = check_doc(unit, second.text, second.finish_reason, plan.known_identifiers).failures
        self.ex.retry_stats.record(first, {f["cause"] for f in failures})
        return second, failures, 2

    def _limit(self, gen: DocGenerator) -> int | None:
        """The new tokens a first attempt may use: the generator's own limit, else the run's setting."""
        n = getattr(gen, "max_new_tokens", None) or self.cfg.sampling.get("max_new_tokens")
        return n if isinstance(n, int) and n > 0 else None

    def _prompt_tokens(self, gen: DocGenerator, chunk: CodeChunk, first: DocResult, added_chars: int) -> int:
        """The retry prompt's tokens: counted by the generator where it can, else the first prompt plus
        the note estimated with the plan's characters per token (rounded up)."""
        count = getattr(gen, "count_prompt_tokens", None)
        if callable(count):
            return int(count(chunk))
        return first.prompt_tokens + math.ceil(max(0, added_chars) / self.plan.chars_per_token)

    def _finish(self, job: Job, final: tuple[DocResult, list[dict], int] | None) -> None:
        ex, unit = self.ex, job.unit
        twins = self.twins.pop(job.key)
        if final is None:
            for twin in twins:  # identical chunks share the error
                ex.errors[twin.uid] = ex.errors[unit.uid]
                self._unit_finished(twin.uid)
            self._unit_finished(unit.uid)
            return
        res, failures, attempts = final
        text = storable(res.text)  # a lone surrogate would break the store, the pages and the sources
        stored = StoredResult(key=job.key, text=text.strip(), summary=first_sentence(text), flags=failures,
                              model_id=self.cfg.model_id, prompt_tokens=res.prompt_tokens,
                              completion_tokens=res.completion_tokens, finish_reason=res.finish_reason,
                              attempts=attempts)
        ex.docs[unit.uid] = self.by_key[job.key] = stored
        ex.prompt_tokens += res.prompt_tokens
        ex.completion_tokens += res.completion_tokens
        ex.generated += 1
        self._committed(self.commit.add_result(stored, unit.uid, unit.path, unit.qualname, code_hash(unit.stable_code)))
        self.observer.unit_done(unit.uid, cached=False, flags=stored.flags, tokens=stored.completion_tokens)
        for twin in twins:  # identical code with identical context: one generation serves all
            self._reuse(twin, job.key, stored)
        self._unit_finished(unit.uid)

    # ----- commits and progress --------------------------------------------------------------
    async def _tick(self) -> None:
        """Commit a group that has waited long enough even when no new result arrives."""
        while True:
            await asyncio.sleep(min(0.25, self.cfg.commit_seconds / 4))
            if self.commit.due():
                self._flush()

    def _flush(self) -> None:
        self._committed(self.commit.flush() > 0)

    def _committed(self, wrote: bool) -> None:
        if not wrote:
            return
        self.ex.commits = self.commit.commits
        if self.ex.first_commit_seconds is None and self.ex.generated:
            self.ex.first_commit_seconds = time.perf_counter() - self.t0
        self.observer.batch_done(self.ex.completion_tokens, self._busy_seconds())

    def _busy(self, delta: int) -> None:
        now = time.perf_counter()
        if self.in_flight == 0 and delta > 0:
            self.busy_since = now
        self.in_flight += delta
        if self.in_flight == 0 and self.busy_since is not None:
            self.ex.generation_seconds += now - self.busy_since
            self.busy_since = None
        self.ex.max_in_flight = max(self.ex.max_in_flight, self.in_flight)
        self.observer.in_flight = self.in_flight

    def _busy_seconds(self) -> float:
        extra = time.perf_counter() - self.busy_since if self.busy_since is not None else 0.0
        return self.ex.generation_seconds + extra


async def _call(gen: DocGenerator, chunk: CodeChunk) -> DocResult:
    """One generation; an exception fails this chunk only, never the run."""
    try:
        return await gen.generate_async(chunk)
    except Exception as e:
        return DocResult(chunk_id=chunk.id, finish_reason="error", error=f"{type(e).__name__}: {e}")
