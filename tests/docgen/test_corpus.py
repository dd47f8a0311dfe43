"""Chunking, doc detection and `docgen check` on real code (tests/docgen/corpus, see SOURCES.md).

Recall of the units a person expects must be 100% in every language; `check` must report exactly
the public units that have no doc in the source (no false "missing", no false "stale")."""
from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from app.docgen.doccheck import CheckOutcome, check_plan
from app.docgen.planner import make_plan
from app.docgen.units import MODULE

CORPUS = Path(__file__).parent / "corpus"
EXPECTED = json.loads((CORPUS / "EXPECTED.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    # A copy outside this repository: under tests/ every file would count as a test file.
    dst = tmp_path_factory.mktemp("corpus") / "corpus"
    shutil.copytree(CORPUS, dst, ignore=shutil.ignore_patterns("*.md", "*.json"))
    return dst


@pytest.fixture(scope="module")
def plan(corpus):
    return make_plan(corpus)


def test_every_expected_unit_is_found_in_every_language(plan):
    found = {fc.path: fc for fc in plan.files}
    assert set(found) == set(EXPECTED)
    hits, totals = defaultdict(int), defaultdict(int)
    unexpected = []
    for path, exp in EXPECTED.items():
        fc = found[path]
        names = [u.qualname for u in fc.units if u.qualname != MODULE]
        lang = {"tsx": "typescript"}.get(fc.language, fc.language)
        totals[lang] += len(exp["units"])
        hits[lang] += len(set(exp["units"]) & set(names))
        unexpected += [f"{path}::{n}" for n in names if n not in exp["units"]]
    recall = {lang: hits[lang] / totals[lang] for lang in totals}
    print("recall per language:", {k: f"{v:.0%} of {totals[k]}" for k, v in sorted(recall.items())})
    assert set(recall) == {"python", "javascript", "typescript", "go", "rust", "java", "c", "cpp"}
    assert all(r == 1.0 for r in recall.values()), recall
    assert not unexpected  # no junk units (line-count parts, duplicates of overloads)


def test_existing_docs_are_found_by_each_convention(plan):
    for fc in plan.files:
        exp = EXPECTED[fc.path]
        docs = {u.qualname: u.existing_doc.split("\n")[0][:50] for u in fc.units if u.qualname != MODULE and u.existing_doc}
        assert docs == exp["docs"], fc.path
        module = next(u for u in fc.units if u.qualname == MODULE)
        assert module.existing_doc.split("\n")[0][:50] == exp["module_doc"], fc.path
        assert "Copyright" not in module.existing_doc and "License" not in module.existing_doc


def test_check_reports_exactly_the_undocumented_public_units(plan):
    out = CheckOutcome()
    check_plan(plan, "", out)
    missing = defaultdict(list)
    for f in out.missing:
        missing[f.path].append(f.name)
    assert {p: sorted(v) for p, v in missing.items()} == {p: sorted(e["missing"]) for p, e in EXPECTED.items() if e["missing"]}
    assert out.stale == []
    assert out.test_files_skipped == 2  # cobra/args_test.go, gson's src/test/.../JsonPrimitiveTest.java

    with_tests = CheckOutcome()
    check_plan(plan, "", with_tests, include_tests=True)
    assert any(f.path == "cobra/args_test.go" for f in with_tests.missing) is False  # Go test helpers are lowercase
    assert any("JsonPrimitiveTest" in f.name for f in with_tests.missing)
