"""From a path to a plan: walk, chunk, split long units, build the graph, schedule waves.

Nothing here needs a model; `docgen estimate` and `docgen check` stop at the plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from app.docgen import pyimports
from app.docgen.checks import repository_identifiers
from app.docgen.chunker import FileChunks, chunk_source
from app.docgen.docbudget import fit_existing_doc
from app.docgen.graph import Schedule, build_deps, schedule
from app.docgen.parts import CHARS_PER_TOKEN, estimate_tokens, split_unit
from app.docgen.units import SourceUnit
from app.docgen.walker import WalkConfig, WalkResult, walk

# Tokens the prompt spends besides the code: system prompt, template, callee context.
PROMPT_OVERHEAD_TOKENS = 400
CONTEXT_BUDGET_TOKENS = 300


@dataclass
class PlanConfig:
    walk: WalkConfig = field(default_factory=WalkConfig)
    max_seq_length: int = 4096
    max_new_tokens: int = 256
    fast: bool = False
    # Measured with the generator's tokenizer when it offers one (see runner.calibrate).
    chars_per_token: float = CHARS_PER_TOKEN
    prompt_overhead_tokens: int = PROMPT_OVERHEAD_TOKENS
    # The generator's exact count of a chunk's whole prompt (`count_prompt_tokens`), when it has one:
    # then every part is split until its prompt + context budget + new tokens fit max_seq_length.
    count_prompt_tokens: Callable | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise ValueError("max_new_tokens must be positive (try 256)")
        if self.code_budget < 64:
            raise ValueError(
                f"max_seq_length {self.max_seq_length} leaves no room for code after {self.max_new_tokens} new "
                f"tokens and ~{self.prompt_overhead_tokens + CONTEXT_BUDGET_TOKENS} prompt tokens; raise --max-seq-length"
            )

    def fits(self, unit: SourceUnit) -> bool:
        """Whether the unit's prompt, its callee context and the generated tokens fit the window."""
        if self.count_prompt_tokens is None:
            return estimate_tokens(unit.prompt_code or unit.code, self.chars_per_token) <= self.code_budget
        prompt = int(self.count_prompt_tokens(unit.to_chunk("")))
        return prompt + CONTEXT_BUDGET_TOKENS + self.max_new_tokens <= self.max_seq_length

    @property
    def code_budget(self) -> int:
        return self.max_seq_length - self.max_new_tokens - self.prompt_overhead_tokens - CONTEXT_BUDGET_TOKENS


@dataclass
class Plan:
    root: Path
    walk: WalkResult
    files: list[FileChunks]
    units: list[SourceUnit]
    schedule: Schedule
    known_identifiers: set[str]
    parse_error_files: list[str]
    by_uid: dict[str, SourceUnit] = field(default_factory=dict)
    deps: dict[str, set[str]] = field(default_factory=dict)  # the dependency graph, even with --fast
    chars_per_token: float = CHARS_PER_TOKEN  # what the code budget was sized with

    def __post_init__(self) -> None:
        self.by_uid = {u.uid: u for u in self.units}


def make_plan(root: str | Path, cfg: PlanConfig | None = None) -> Plan:
    cfg = cfg or PlanConfig()
    walked = walk(root, cfg.walk)
    files: list[FileChunks] = []
    py_imports: dict[str, dict | None] = {}
    for f in walked.files:
        try:
            fc = chunk_source(f.rel, f.language, f.text)
        except Exception as exc:  # a grammar crash must not end the run; the file is reported
            walked.skip(f.rel, f"chunker error ({type(exc).__name__}: {exc})")
            continue
        files.append(fc)
        if f.language == "python":
            py_imports[f.rel] = pyimports.imports(f.rel, f.text)
    units: list[SourceUnit] = []
    for fc in files:
        for u in fc.units:
            units.append(u)
            fit_existing_doc(u, cfg.code_budget, cfg.chars_per_token)
            units.extend(split_unit(u, cfg.code_budget, cfg.chars_per_token, fits=cfg.fits))
    deps = build_deps(units, py_imports)
    sched = schedule(units, deps, fast=cfg.fast)
    # File and folder names count as identifiers too: docs name modules (`shapes`, `test_cli`).
    known = repository_identifiers([f.text for f in walked.files] + [f.rel.replace("/", " ") for f in walked.files])
    return Plan(root=walked.root, walk=walked, files=files, units=units, schedule=sched, known_identifiers=known,
                parse_error_files=[fc.path for fc in files if fc.parse_errors], chars_per_token=cfg.chars_per_token,
                deps=deps)
