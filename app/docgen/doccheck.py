"""`docgen check`: which public API lacks documentation in the source, and which docs are stale.

Public API is decided per language (exports.py). Test files are not API and are left out unless
asked. Only documentation written in the source counts: docs docgen generated and stored are
not in the code a reader (or `help()`) sees, so they count only with `include_generated`, and
are then reported separately. Stale: a docstring/doc comment naming parameters the signature
does not have, or (with `include_generated`) a stored doc whose code changed since.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from app.docgen.checks import documented_params, undocumented_receivers
from app.docgen.planner import Plan
from app.docgen.store import Store, code_hash
from app.docgen.units import CALLABLE_KINDS, MODULE, SourceUnit

# Paths of tests by the conventions of the eight languages (matched on the path relative to the project).
_TEST_PATH = re.compile(
    r"(^|/)(tests?|__tests__|testing|testdata|spec|src/test)/"  # test folders (Maven's src/test too)
    r"|(^|/)(test_[^/]*\.py|[^/]*_test\.(py|go|c|cc|cpp)|conftest\.py)$"
    r"|\.(test|spec)\.[cm]?[jt]sx?$"
    r"|(^|/)[^/]*Tests?\.java$")


def is_test_path(rel: str) -> bool:
    return bool(_TEST_PATH.search(rel.replace("\\", "/")))


@dataclass
class Finding:
    path: str  # relative to the project root
    line: int
    name: str
    kind: str
    why: str = ""

    def as_dict(self) -> dict:
        return {"path": self.path, "line": self.line, "name": self.name, "kind": self.kind, "why": self.why}


@dataclass
class CheckOutcome:
    missing: list[Finding] = field(default_factory=list)
    stale: list[Finding] = field(default_factory=list)
    generated_only: list[Finding] = field(default_factory=list)  # documented only by a stored doc
    checked: int = 0
    test_files_skipped: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.stale

    def as_dict(self, include_generated: bool) -> dict:
        return {"ok": self.ok, "checked": self.checked, "test_files_skipped": self.test_files_skipped,
                "include_generated": include_generated,
                "missing": [f.as_dict() for f in self.missing], "stale": [f.as_dict() for f in self.stale],
                "documented_only_by_docgen_store": [f.as_dict() for f in self.generated_only]}


def requires_doc(u: SourceUnit) -> bool:
    return u.qualname != MODULE and u.is_public and u.exported and u.kind not in ("impl", "part")


# Arguments a signature takes without naming them: Python *args/**kwargs (docs name the keywords),
# C/C++ `...`. Java/Go/JS varargs have a name (`T... strategies`), so they stay checked.
_PY_VARIADIC = re.compile(r"[(,]\s*\*{1,2}\s*[A-Za-z_]")
_VARIADIC = re.compile(r"\.\.\.")
_JS_ARGUMENTS = re.compile(r"\barguments\b")


def takes_any_arguments(u: SourceUnit) -> bool:
    """Whether the unit accepts arguments its parameter list does not name, so a doc may rightly
    describe parameters the signature lacks (attrs `evolve(*args, **changes)`, express `req.accepts`
    reading `arguments`)."""
    if u.language == "python" and _PY_VARIADIC.search(u.signature or ""):
        return True
    if u.language in ("c", "cpp") and _VARIADIC.search(u.signature or ""):
        return True
    return u.language in ("javascript", "typescript", "tsx") and bool(_JS_ARGUMENTS.search(u.code))


def _stale_params(u: SourceUnit) -> str:
    if u.kind not in CALLABLE_KINDS or not u.existing_doc or takes_any_arguments(u):
        return ""
    documented, _ = documented_params(u.existing_doc)
    actual = {p.lstrip("*&") for p in u.params}
    extra = sorted(documented - actual - undocumented_receivers(u))
    return f"its doc documents {', '.join(extra)}, not in the signature" if extra else ""


def check_plan(plan: Plan, prefix: str, out: CheckOutcome, store: Store | None = None,
               include_tests: bool = False) -> None:
    """Add one plan's findings to `out`. `prefix`: the plan root's path inside the project, so paths
    (and store ids) are the same whether a file, a folder or the whole project was named."""
    test_files = {fc.path for fc in plan.files if is_test_path(prefix + fc.path)}
    out.test_files_skipped += 0 if include_tests else len(test_files)
    for u in plan.units:
        if not requires_doc(u) or (u.path in test_files and not include_tests):
            continue
        out.checked += 1
        path = prefix + u.path
        finding = Finding(path, u.start_line, u.qualname, u.kind)
        if u.existing_doc:
            why = _stale_params(u)
            if why:
                finding.why = why
                out.stale.append(finding)
            continue
        row = store.unit_row(f"{path}::{u.qualname}") if store is not None else None
        stored = store.get(row[0]) if row is not None else None
        if stored is None or not stored.text.strip() or stored.flags:
            out.missing.append(finding)  # nothing stored, an empty doc, or one the checks flagged
        elif row[1] != code_hash(u.stable_code):
            finding.why = "the code changed since docgen generated its doc (rerun docgen run)"
            out.stale.append(finding)
        else:
            out.generated_only.append(finding)


def project_root(path: Path) -> Path:
    """The folder paths are reported from: the nearest one above `path` holding `.docgen` or `.git`
    (so `check pkg/core.py` and `check .` name units alike), else the folder itself."""
    start = path.resolve() if path.is_dir() else path.resolve().parent
    for cand in [start, *start.parents]:
        if (cand / ".docgen").is_dir() or (cand / ".git").exists():
            return cand
    return start
