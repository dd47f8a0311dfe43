"""`docgen run` end to end: plan, look up stored results, load the generator only if something
must be generated, execute, write outputs, report.

The generator comes from a factory the caller passes, so this module never imports a model
library itself (the CLI imports the optimized generator lazily; tests pass a fake).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from app.docgen import outputs
from app.docgen.countcache import RememberedCounts
from app.docgen.generator_source import GeneratorSource
from app.docgen.pipeline import RunConfig, execute
from app.docgen.planner import PlanConfig, make_plan
from app.docgen.progress import Observer
from app.docgen.report import RunReport, build_report
from app.docgen.store import Store
from app.docgen.walker import WalkConfig
from app.docgen.writers.docstrings import DocstringReport, write_docstrings
from app.docgen.store_lock import StoreLock
from app.llm.types import CodeChunk, DocGenerator


def prompt_version() -> str:
    """The prompt's version (part of every result's store key). Imported here, not at module
    level, only to keep `docgen estimate/check` imports light."""
    from app.llm.prompts import PROMPT_VERSION

    return str(PROMPT_VERSION)


@dataclass
class RunOptions:
    path: Path
    out: Path | None = None  # default: PATH/docs
    store: Path | None = None  # default: PATH/.docgen/docgen.sqlite
    walk: WalkConfig = field(default_factory=WalkConfig)
    write_mode: str | None = None  # None | "write" | "diff"
    force: bool = False
    overwrite: bool = False
    fast: bool = False
    resume: bool = True
    retry: bool = True
    batch_size: int = 0  # cap on chunks in flight (0: the pipeline's default)
    commit_every: int = 32  # group commit: at most this many results ...
    commit_seconds: float = 1.0  # ... or this many seconds between commits
    max_seq_length: int = 4096
    max_new_tokens: int = 256
    sampling: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = Path(self.path).resolve()
        if not self.path.exists():
            raise ValueError(f"{self.path} does not exist; pass the folder of source code to document")
        base = outputs.base_of(self)  # a one-file run: the project folder holding its `.docgen/`
        self.out_named, self.store_named = self.out is not None, self.store is not None
        self.out = Path(self.out).resolve() if self.out else base / "docs"
        self.store = Path(self.store).resolve() if self.store else base / ".docgen" / "docgen.sqlite"
        if self.write_mode not in (None, "write", "diff"):
            raise ValueError("write_mode must be None, 'write' or 'diff'")
        self.walk.extra_skip_dirs = list(self.walk.extra_skip_dirs) + [str(self.out)]


@dataclass
class RunOutcome:
    report: RunReport
    docstrings: DocstringReport | None = None
    pages: list[Path] = field(default_factory=list)


def calibrate(cfg: PlanConfig, plan, generator) -> PlanConfig:
    """Token estimates from the generator's own tokenizer, when it exposes `count_tokens(text)`
    and `count_prompt_tokens(chunk)`: characters per token over a sample of this repository's
    code (a low percentile, so long units are split before they overflow), and the prompt's
    fixed cost (system prompt + template) for a one-line chunk."""
    count = getattr(generator, "count_tokens", None)
    count_prompt = getattr(generator, "count_prompt_tokens", None)
    if not callable(count) or not callable(count_prompt):
        return cfg
    step = max(1, len(plan.units) // 200)
    ratios = sorted(len(u.code) / max(1, count(u.code)) for u in plan.units[::step] if len(u.code) >= 200)
    if ratios:
        low = ratios[len(ratios) // 10]  # 10th percentile: most units are denser than this
        cfg = replace(cfg, chars_per_token=min(cfg.chars_per_token, 0.9 * low))
    overhead = int(count_prompt(CodeChunk(code="pass", path="x.py", name="x", signature="x()"))) + 16
    return replace(cfg, prompt_overhead_tokens=max(cfg.prompt_overhead_tokens, overhead), count_prompt_tokens=count_prompt)


def run_docgen(opts: RunOptions, make_generator: Callable[[], DocGenerator], observer: Observer) -> RunOutcome:
    """Output locations are checked before anything is loaded; one run per store at a time."""
    outputs.check_locations(opts)
    outputs.prepare_store_dir(opts)
    with StoreLock(opts.store, observer.message):
        outputs.check_out_folder(opts)
        return _run_docgen(opts, make_generator, observer)


def _run_docgen(opts: RunOptions, make_generator: Callable[[], DocGenerator], observer: Observer) -> RunOutcome:
    """`make_generator` is called only if some chunk has no stored result, provided it declares its
    `model_id` (app.llm.types.GeneratorFactory); a plain callable is loaded up front."""
    t0 = time.perf_counter()
    observer.message(f"scanning {opts.path}")
    plan_cfg = PlanConfig(walk=opts.walk, max_seq_length=opts.max_seq_length, max_new_tokens=opts.max_new_tokens,
                          fast=opts.fast)
    declared = getattr(make_generator, "model_id", None)
    sizing_key = _sizing_key(opts, declared)
    sizing = _stored_sizing(opts.store, sizing_key) if declared is not None else None
    shown = {"plan": ""}  # what the load message says about the plan, once there is one
    source = GeneratorSource(make_generator, on_load=lambda: observer.message(
        f"{shown['plan']}loading the generator (a first load or compilation can take a minute)"))
    try:
        counts = None
        if sizing:
            remembered = sizing.pop("prompt_counts", None)
            plan_cfg = replace(plan_cfg, **sizing)
            if remembered is not None:  # exact counts of the first run: the same cuts, so the same keys
                counts = RememberedCounts(remembered, lambda: _real_counter(opts, declared, sizing, source))
                plan_cfg = replace(plan_cfg, count_prompt_tokens=counts)
        plan = make_plan(opts.path, plan_cfg)
        shown["plan"] = f"{len(plan.files)} files, {len(plan.units)} chunks; "
        if not plan.units:
            observer.message("nothing to document")
            ex = _empty_execution()
            report = build_report(plan, ex, time.perf_counter() - t0)
            outputs.review_sources(opts, plan, report)
            return RunOutcome(report=report)
        store = Store(opts.store)
        try:
            if sizing is None:  # measured once per model and settings; this loads the generator
                plan = _measure_sizing(opts, plan_cfg, plan, source, store, sizing_key)
            elif counts is not None and counts.misses:  # new code was counted: remember it too
                store.put_meta(sizing_key, {**sizing, "prompt_counts": counts.known})
            cfg = RunConfig(model_id=source.model_id, prompt_version=prompt_version(), sampling=opts.sampling,
                            batch_size=opts.batch_size, resume=opts.resume, retry=opts.retry,
                            commit_every=opts.commit_every, commit_seconds=opts.commit_seconds)
            ex = asyncio.run(execute(plan, source, store, cfg, observer))
            report = build_report(plan, ex, time.perf_counter() - t0)
            store.finish_run(ex.run_id, {"generated": ex.generated, "generation_seconds": ex.generation_seconds,
                                         "reused": ex.reused, "completion_tokens": ex.completion_tokens})
        finally:
            store.close()
    finally:
        source.close()
    if not source.loaded:
        report.outputs.append("generator: not loaded (every chunk had a stored result)")
    observer.message("writing Markdown")
    outputs.review_sources(opts, plan, report)
    pages = outputs.write_pages(opts, plan, ex.docs, report).written
    report.outputs.append(f"store: {opts.store}")
    doc_rep = None
    if opts.write_mode:
        files: dict[str, dict[str, str]] = {}
        for u in plan.units:
            if u.language == "python" and u.kind != "part" and u.uid in ex.docs and ex.docs[u.uid].text:
                files.setdefault(u.path, {})[u.qualname] = ex.docs[u.uid].text
        doc_rep = write_docstrings(plan.root, files, opts.write_mode, force=opts.force, overwrite=opts.overwrite)
        report.outputs.append(
            f"docstrings ({opts.write_mode}): {doc_rep.inserted} inserted, {doc_rep.replaced} replaced, "
            f"{doc_rep.kept_human} human docstrings kept, {len(doc_rep.written)} files written, "
            f"{len(doc_rep.refused)} files refused")
        report.outputs.extend(f"  refused {p} (nothing written): {why}" for p, why in doc_rep.refused.items())
        report.outputs.extend(f"  not written {uid}: {why}" for uid, why in doc_rep.skipped)
    report.wall_seconds = time.perf_counter() - t0
    return RunOutcome(report=report, docstrings=doc_rep, pages=pages)


def _sizing_key(opts: RunOptions, model_id: str | None) -> str:
    name = json.dumps({"model_id": model_id, "max_seq_length": opts.max_seq_length,
                       "max_new_tokens": opts.max_new_tokens, "fast": opts.fast}, sort_keys=True)
    return "plan_sizing:" + hashlib.sha256(name.encode()).hexdigest()[:24]


def _stored_sizing(store_path: Path, key: str) -> dict | None:
    """The plan sizing an earlier run measured for this model and these settings (see
    _measure_sizing), read before planning so the plan is built once and no model is loaded."""
    if not Path(store_path).exists():
        return None
    store = Store(store_path)
    try:
        return store.get_meta(key)
    finally:
        store.close()


def _measure_sizing(opts: RunOptions, plan_cfg: PlanConfig, plan, source: GeneratorSource, store: Store, key: str):
    """The plan sized with the generator's window and tokenizer (calibrate), which loads the
    generator. The sizing is stored per model and settings, so later runs plan, key and find
    their results without loading the model."""
    generator = source.load_now()
    seq = int(getattr(generator, "max_seq_length", opts.max_seq_length) or opts.max_seq_length)
    tuned = calibrate(replace(plan_cfg, max_seq_length=seq), plan, generator)
    counts = None
    if tuned.count_prompt_tokens is not None:  # record every exact count, for reruns (countcache.py)
        real = tuned.count_prompt_tokens
        counts = RememberedCounts({}, lambda: real)
        tuned = replace(tuned, count_prompt_tokens=counts)
    # The model's real window and tokenizer decide which units need splitting.
    plan = make_plan(opts.path, tuned) if tuned != plan_cfg or counts is not None else plan
    if source.declared_model_id is not None:
        store.put_meta(key, {"max_seq_length": tuned.max_seq_length, "chars_per_token": tuned.chars_per_token,
                             "prompt_overhead_tokens": tuned.prompt_overhead_tokens,
                             **({"prompt_counts": counts.known} if counts is not None else {})})
    return plan


def _real_counter(opts: RunOptions, model_id: str, sizing: dict, source: GeneratorSource):
    """The exact prompt counter for chunks the first run did not count: the model's tokenizer
    files alone when they are here (no model load), else the generator itself."""
    from app.docgen.tokencount import load_counter

    counter, _ = load_counter(model_id, sizing.get("max_seq_length", opts.max_seq_length))
    gen = counter if counter is not None else source.load_now()
    count = getattr(gen, "count_prompt_tokens", None)
    if not callable(count):
        raise ValueError(f"the generator for {model_id} cannot count prompt tokens; rerun with --no-resume")
    return count


def _empty_execution():
    from app.docgen.pipeline import Execution

    return Execution(run_id="none")
