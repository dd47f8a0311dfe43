"""`docgen estimate` plans as `run` does (same window, same exact token counts), says what the
store holds, and gives time as a range from measurements on this machine."""
from __future__ import annotations

from app.docgen.audit import estimate
from app.docgen.fake_generator import FakeDocGenerator
from app.docgen.hardware import Hardware
from app.docgen.runner import prompt_version
from app.docgen.timing import estimate_time, load_rates, record_rate
from app.docgen.tokencount import load_counter
from app.docgen.walker import WalkConfig
from tests.docgen.conftest import run_fake, write

SEQ = 2048
CPU = Hardware("cpu", cpu_cores=2)


def _project() -> dict[str, str]:
    body = "".join(f"    v{i} = helper(x, {i}) + leaf(v{max(i - 1, 0)})\n" for i in range(120))
    return {
        "big.py": f"def big(x):\n{body}    return v0\n",
        "small.py": "def leaf(x):\n    return x + 1\n\n\ndef helper(x, k):\n    return leaf(x) * k\n",
        "util.js": "export function add(a, b) {\n  return a + b;\n}\n",
    }


class _TokenizedFake(FakeDocGenerator):
    """The fake model with a real tokenizer's counts, as the optimized generator exposes them."""

    def __init__(self, counter, model_id: str) -> None:
        super().__init__(model_id=model_id, max_seq_length=SEQ)
        self.count_tokens = counter.count_tokens
        self.count_prompt_tokens = counter.count_prompt_tokens


def _estimate(root, model, store):
    return estimate(root, WalkConfig(), model, model, SEQ, 128, store, prompt_version(), {}, CPU)


def test_estimate_matches_run_chunks_and_store(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("DOCGEN_CACHE", str(tmp_path / "cache"))
    model = str(tiny_checkpoint("tiny"))
    counter, why = load_counter(model, SEQ)
    assert counter is not None, why
    root = write(tmp_path / "p", _project())
    store = root / ".docgen" / "docgen.sqlite"

    before = _estimate(root, model, store)
    assert before.counted_with.startswith("exact")
    out, _ = run_fake(root, _TokenizedFake(counter, model), max_seq_length=SEQ, max_new_tokens=128)
    assert before.chunks == out.report.chunks and any(u.kind == "part" for u in before.plan.units)
    assert before.status.cached == 0 and before.status.to_generate == out.report.generated

    again = _estimate(root, model, store)
    assert (again.status.cached, again.status.to_generate) == (out.report.chunks, 0)
    assert again.time.low == again.time.high == 0.0

    # One leaf's body edited: the leaf is regenerated; its callers only if its summary changes, which
    # the fake model's does not (it comes from the signature) and a real model's may.
    (root / "small.py").write_text(_project()["small.py"].replace("x + 1", "x + 2"))
    edited = _estimate(root, model, store)
    assert (edited.status.to_generate, edited.status.uncertain) == (1, 2)  # leaf; helper and the module
    rerun, _ = run_fake(root, _TokenizedFake(counter, model), max_seq_length=SEQ, max_new_tokens=128)
    assert rerun.report.generated == edited.status.to_generate
    assert rerun.report.reused == edited.status.cached + edited.status.uncertain


def test_without_the_tokenizer_the_estimate_says_so(tmp_path):
    root = write(tmp_path / "p", _project())
    est = _estimate(root, str(tmp_path / "no-model"), root / ".docgen" / "x.sqlite")
    assert est.counted_with.startswith("estimated from characters") and "not on this machine" in est.counted_with
    assert est.time is None  # no size, no measurement: no number is made up


def test_time_range_from_measurements(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCGEN_CACHE", str(tmp_path))
    rough = estimate_time(100, 50_000, 256, "m-7b", 7_000_000_000, CPU)
    assert rough.low < rough.high and "not measured" in rough.basis
    record_rate(CPU, "m-1b", 1_000_000_000, chunks=10, seconds=20.0, tokens=1000)
    assert load_rates()[0]["s_per_chunk"] == 2.0
    same = estimate_time(100, 50_000, 256, "m-1b", 1_000_000_000, CPU)
    assert (same.low, same.high) == (150.0, 300.0) and "measured 2.00s per chunk" in same.basis
    scaled = estimate_time(100, 50_000, 256, "m-7b", 7_000_000_000, CPU)
    assert (scaled.low, scaled.high) == (700.0, 2800.0) and "scaled from m-1b" in scaled.basis
    other_machine = estimate_time(100, 50_000, 256, "m-1b", 1_000_000_000, Hardware("gpu", "H100", 80.0, 8))
    assert "not measured" in other_machine.basis
    project = estimate_time(10, 1000, 256, "m-1b", None, CPU, project_s_per_chunk=1.0)
    assert (project.low, project.high) == (7.5, 15.0)


def test_the_exact_count_changes_the_plan(tmp_path, tiny_checkpoint):
    """Why estimate loads the tokenizer: on this project a character estimate cuts differently."""
    from app.docgen.planner import PlanConfig, make_plan

    root = write(tmp_path / "p", _project())
    exact = _estimate(root, str(tiny_checkpoint("tiny")), root / "s.sqlite")
    rough = make_plan(root, PlanConfig(max_seq_length=SEQ, max_new_tokens=128))
    assert len(rough.units) != exact.chunks
