"""The dataflow pipeline: same stored results as the wave pipeline, no barriers, no needless load."""
import asyncio
import shutil
import sqlite3

import pytest

from app.docgen.fake_generator import FakeDocGenerator
from app.docgen.pipeline import RunConfig, execute
from app.docgen.planner import PlanConfig, make_plan
from app.docgen.progress import Observer
from app.docgen.runner import prompt_version
from app.docgen.store import Store
from app.llm.types import DocResult
from tests.docgen.conftest import DEMO, CountingFactory, run_fake, write
from tests.docgen.waves_reference import execute_waves

# A chain, a cycle (ping <-> pong), identical twins in two files, and a doc that fails its first check.
CYCLE = {
    "a.py": ("def leaf(x):\n    return x + 1\n\n\n"
             "def mid(x):\n    return leaf(x) * 2\n\n\n"
             "def ping(n):\n    return pong(n - 1) if n else leaf(0)\n\n\n"
             "def pong(n):\n    return ping(n - 1) if n else mid(0)\n\n\n"
             "def twin(y):\n    return y * 3\n"),
    "b.py": "def twin(y):\n    return y * 3\n\n\ndef user(z):\n    return z\n",
}


def _rows(store_path):
    db = sqlite3.connect(store_path)
    try:
        results = sorted(db.execute("SELECT key, text, summary, flags, attempts, finish_reason FROM results"))
        units = sorted(db.execute("SELECT uid, key, code_hash FROM units"))
        # which of two identical twins made the one generation depends on timing, not on the result
        gens = sorted(db.execute("SELECT key, attempt FROM generations"))
        return results, units, gens
    finally:
        db.close()


def _run(executor, root, store_path, gen, **cfg):
    plan = make_plan(root, PlanConfig())
    store = Store(store_path)
    try:
        rc = RunConfig(model_id=gen.model_id, prompt_version=prompt_version(), **cfg)
        return asyncio.run(executor(plan, gen, store, rc, Observer()))
    finally:
        store.close()


@pytest.mark.parametrize("batch_size", [0, 1, 3])
def test_same_stored_results_as_the_wave_pipeline(tmp_path, batch_size):
    root = tmp_path / "p"
    shutil.copytree(DEMO, root)
    write(root, CYCLE)
    ref = _run(execute_waves, root, tmp_path / "waves.sqlite", FakeDocGenerator(fail_first=("mid", "ping")),
               batch_size=batch_size)
    new = _run(execute, root, tmp_path / "flow.sqlite", FakeDocGenerator(fail_first=("mid", "ping")),
               batch_size=batch_size)
    assert _rows(tmp_path / "waves.sqlite") == _rows(tmp_path / "flow.sqlite")
    assert (new.generated, new.reused, new.retried, new.errors) == (ref.generated, ref.reused, ref.retried, ref.errors)
    assert new.reused >= 1 and new.retried == 2  # the twins shared one generation; mid and ping were retried
    assert {u: d.text for u, d in new.docs.items()} == {u: d.text for u, d in ref.docs.items()}


def test_cached_rerun_never_calls_the_generator_factory(tmp_path):
    root = write(tmp_path / "p", CYCLE)
    first = CountingFactory(FakeDocGenerator())
    out, _ = run_fake(root, factory=first)
    assert first.calls == 1 and out.report.generated == out.report.chunks - 1  # the twins share one
    again = CountingFactory(FakeDocGenerator())
    out, _ = run_fake(root, factory=again)
    assert again.calls == 0, "a fully cached rerun loaded the generator"
    assert out.report.reused == out.report.chunks and out.report.generated == 0
    assert any("not loaded" in line for line in out.report.outputs)
    # one changed function: now the factory is called, once, and only the stale chunks regenerate
    (root / "b.py").write_text(CYCLE["b.py"].replace("return z", "return z + 1"))
    third = CountingFactory(FakeDocGenerator())
    out, gen = run_fake(root, factory=third)
    assert third.calls == 1 and 1 <= out.report.generated <= 2  # user, and b.py's module chunk


def test_plain_callable_factory_is_loaded_up_front(tmp_path):
    root = write(tmp_path / "p", CYCLE)
    calls = []
    run_fake(root, factory=lambda: calls.append(1) or FakeDocGenerator())
    run_fake(root, factory=lambda: calls.append(1) or FakeDocGenerator())
    assert len(calls) == 2  # no declared model id: the key cannot be computed without loading


class GatedGenerator(FakeDocGenerator):
    """`slow` cannot finish until `top` (which depends on `fast` only) has been submitted: a
    pipeline with a barrier per wave or batch would wait on `slow` first and deadlock."""

    def __init__(self):
        super().__init__()
        self.gate = None
        self.order = []
        self.running = self.peak = 0

    async def generate_async(self, chunk):
        self.gate = self.gate or asyncio.Event()
        self.order.append(chunk.name)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if chunk.name == "top":
                self.gate.set()
            if chunk.name == "slow":
                await asyncio.wait_for(self.gate.wait(), timeout=10)
            await asyncio.sleep(0)
            return await super().generate_async(chunk)
        finally:
            self.running -= 1


GATED = {"g.py": "def fast(x):\n    return x\n\n\ndef slow(x):\n    return x\n\n\n"
                 "def top(x):\n    return fast(x)\n\n\ndef other(x):\n    return x\n"}


def test_a_unit_starts_as_soon_as_its_dependencies_are_done(tmp_path):
    root = write(tmp_path / "p", GATED)
    gen = GatedGenerator()
    out, _ = run_fake(root, gen)
    assert out.report.errors == {} and out.report.generated == 5
    assert gen.order.index("top") < gen.order.index("g.py")  # the module chunk waits for slow; top did not
    assert gen.peak == 3  # fast, slow and other were all in flight at once (the engine picks the batch)


def test_batch_size_caps_chunks_in_flight(tmp_path):
    root = write(tmp_path / "p", {"m.py": "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(12))})
    gen = GatedGenerator()
    gen.gate = asyncio.Event()
    gen.gate.set()
    out, _ = run_fake(root, gen, batch_size=2)
    assert gen.peak == 2 and out.report.generated == 13


def test_generator_exception_fails_that_chunk_only_and_load_failure_ends_the_run(tmp_path):
    class Raising(FakeDocGenerator):
        async def generate_async(self, chunk):
            if chunk.name == "mid":
                raise RuntimeError("boom")
            return await super().generate_async(chunk)

    root = write(tmp_path / "p", CYCLE)
    out, _ = run_fake(root, Raising())
    assert out.report.errors == {"a.py::mid": "RuntimeError: boom"}
    assert out.report.generated == out.report.chunks - 1 - out.report.reused

    def broken():
        raise ValueError("no such model")

    from app.llm.types import GeneratorFactory

    with pytest.raises(ValueError, match="no such model"):
        run_fake(write(tmp_path / "q", CYCLE), factory=GeneratorFactory("fake", broken))


def test_declared_model_id_must_match_the_generator(tmp_path):
    from app.llm.types import GeneratorFactory

    with pytest.raises(ValueError, match="declared model id"):
        run_fake(write(tmp_path / "p", CYCLE), factory=GeneratorFactory("other", FakeDocGenerator))


def test_errors_reach_identical_twins(tmp_path):
    class Flaky(FakeDocGenerator):
        async def generate_async(self, chunk):
            if chunk.name == "twin":
                return DocResult(chunk_id=chunk.id, finish_reason="error", error="out of memory")
            return await super().generate_async(chunk)

    out, _ = run_fake(write(tmp_path / "p", CYCLE), Flaky())
    assert out.report.errors == {"a.py::twin": "out of memory", "b.py::twin": "out of memory"}


def test_cached_rerun_with_a_calibrated_plan_plans_once_and_loads_nothing(tmp_path, monkeypatch):
    """A generator with its own tokenizer changes the plan's sizing; the rerun reads that sizing
    from the store, so it neither loads the generator nor plans twice."""
    import app.docgen.runner as runner

    class Dense(FakeDocGenerator):
        def count_tokens(self, text):
            return len(text)

        def count_prompt_tokens(self, chunk):
            return 300 + len(chunk.code if isinstance(chunk, str) else chunk.code)

    body = "".join(f"    v{i} = x * {i} + helper_{i % 3}(x)\n" for i in range(120))
    root = write(tmp_path / "p", {"big.py": f"def big(x):\n{body}    return v0\n", **CYCLE})
    first, _ = run_fake(root, Dense(max_seq_length=2048), max_seq_length=2048, max_new_tokens=128)
    plans = []
    real = runner.make_plan
    monkeypatch.setattr(runner, "make_plan", lambda *a, **k: (plans.append(1), real(*a, **k))[1])
    again = CountingFactory(Dense(max_seq_length=2048))
    out, _ = run_fake(root, factory=again, max_seq_length=2048, max_new_tokens=128)
    assert again.calls == 0 and len(plans) == 1
    assert out.report.chunks == first.report.chunks > 9 and out.report.reused == out.report.chunks  # parts included


class _ExactCounts(FakeDocGenerator):
    """A generator with its own token counts, denser than the character estimate (2 characters per
    token), so the plan it sizes differs from one sized by characters alone."""

    def count_tokens(self, text):
        return len(text) // 2 + 1

    def count_prompt_tokens(self, chunk):
        return 40 + (len(chunk.code) + len(chunk.signature) + len(chunk.existing_doc) + len(chunk.context)) // 2


def test_rerun_plans_with_the_first_runs_exact_counts_and_loads_nothing(tmp_path):
    """The first run cuts long units with the generator's exact counts; a rerun must cut them the
    same way without loading the model (its stored counts), or its keys would miss."""
    from app.docgen.runner import RunOptions, _sizing_key

    # ~1,030 characters: within the window by the exact count (about 40 + 515 + 300 + 128 tokens of
    # 1024), over it by the calibrated character estimate (1.8 characters per token), so it is split.
    lines = ["def long_one(value_0):", "    total = 0"]
    while sum(len(x) + 1 for x in lines) < 1000:
        lines.append(f"    total = total + {len(lines)} * value_0  # step {len(lines)}")
    root = write(tmp_path / "p", {"long.py": "\n".join(lines + ["    return total"]) + "\n",
                                  "short.py": "def short(x):\n    return x\n"})
    kw = dict(max_seq_length=1024, max_new_tokens=128)
    first = CountingFactory(_ExactCounts(max_seq_length=1024))
    out, _ = run_fake(root, factory=first, **kw)
    assert first.calls == 1 and out.report.generated == out.report.chunks
    again = CountingFactory(_ExactCounts(max_seq_length=1024))
    out2, _ = run_fake(root, factory=again, **kw)
    assert again.calls == 0 and out2.report.generated == 0 and out2.report.chunks == out.report.chunks

    # Without the remembered counts (planning by characters), the cuts differ: the model is needed.
    opts = RunOptions(path=root, **kw)
    store = Store(opts.store)
    key = _sizing_key(opts, "fake")
    sizing = store.get_meta(key)
    assert sizing and sizing.pop("prompt_counts")
    store.put_meta(key, sizing)
    store.close()
    third = CountingFactory(_ExactCounts(max_seq_length=1024))
    out3, _ = run_fake(root, factory=third, **kw)
    assert third.calls == 1 and out3.report.generated > 0
