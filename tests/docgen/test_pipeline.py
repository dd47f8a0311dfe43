"""Pipeline with a fake generator: context, store reuse, incremental reruns, retries, long chunks."""
import sqlite3

from app.docgen.fake_generator import FakeDocGenerator
from app.docgen.store import Store
from tests.docgen.conftest import run_fake, write

SRC = {
    "m.py": (
        "def leaf(x):\n    return x + 1\n\n\n"
        "def mid(x):\n    return leaf(x) * 2\n\n\n"
        "def top(x):\n    return mid(x) - 1\n\n\n"
        "def other(y):\n    return y\n"
    ),
}


def _chunk_names(gen_ids, store_path):
    """Map the generator's chunk ids (result keys) back to qualnames via the store."""
    db = sqlite3.connect(store_path)
    names = dict(db.execute("SELECT key, qualname FROM units").fetchall())
    return sorted(names[k] for k in gen_ids)


def test_context_resume_and_wal(tmp_path):
    root = write(tmp_path / "p", SRC)
    out, gen = run_fake(root)
    assert out.report.generated == out.report.chunks == 5 and out.report.reused == 0
    store = root / ".docgen" / "docgen.sqlite"
    db = sqlite3.connect(store)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # one hop of context: mid's prompt names leaf's signature and summary, not top's
    seen = {}
    gen2 = FakeDocGenerator()
    gen2._result = lambda c: (seen.__setitem__(c.name, c.context), FakeDocGenerator._result(gen2, c))[1]
    out2, _ = run_fake(root, gen2, resume=False)
    assert "def leaf(x): Handles `leaf`" in seen["mid"] and "top" not in seen["mid"]
    assert "def mid(x)" in seen["top"] and "leaf" not in seen["top"]
    # rerun with resume: nothing generated again
    out3, gen3 = run_fake(root)
    assert gen3.calls == 0 and out3.report.reused == 5
    assert (root / "docs" / "m.py.md").read_text().count("Handles `") == 4


def test_incremental_body_edit_and_signature_edit(tmp_path):
    root = write(tmp_path / "p", SRC)
    store = root / ".docgen" / "docgen.sqlite"
    run_fake(root)
    # 1) edit leaf's body: its summary (first line) does not change, so only leaf regenerates
    text = (root / "m.py").read_text()
    (root / "m.py").write_text(text.replace("return x + 1", "return x + 2"))
    out, gen = run_fake(root)
    assert _chunk_names(gen.generated, store) == ["leaf"]
    # 2) edit leaf's signature: its summary changes, so its caller mid regenerates too (and the module
    #    chunk, whose skeleton shows the signature); top's context (mid's summary) is unchanged
    (root / "m.py").write_text((root / "m.py").read_text().replace("def leaf(x)", "def leaf(x, k=0)"))
    out, gen = run_fake(root)
    assert _chunk_names(gen.generated, store) == ["<module>", "leaf", "mid"]


def test_retry_puts_failure_in_context_and_flags_persistent_failures(tmp_path):
    root = write(tmp_path / "p", SRC)
    gen = FakeDocGenerator(fail_first=("mid",))
    contexts = []
    real = gen.generate_async

    async def spy(chunk):  # the pipeline submits one chunk per call, retries as soon as a check fails
        contexts.append((chunk.name, chunk.context))
        return await real(chunk)

    gen.generate_async = spy
    out, _ = run_fake(root, gen)
    retried = [ctx for name, ctx in contexts if name == "mid"]
    assert len(retried) == 2 and "failed these checks" in retried[1] and "invented_param" in retried[1]
    assert out.report.retried == 1 and out.report.flagged == {}
    s = Store(root / ".docgen" / "docgen.sqlite")
    assert s.db.execute("SELECT attempts FROM results r JOIN units u ON u.key = r.key WHERE u.qualname='mid'").fetchone()[0] == 2

    class AlwaysBad(FakeDocGenerator):  # still failing after the retry: kept and flagged
        def _text(self, chunk):
            return "Uses `no_such_thing` and the"

    out, _ = run_fake(write(tmp_path / "q", SRC), AlwaysBad())
    assert out.report.completeness == 1.0 and len(out.report.flagged) == 5
    assert out.report.flagged_by_cause == {"cut_off": 5, "identifiers": 5}
    assert out.report.truthfulness == 0.0


def test_long_chunk_is_split_not_dropped(tmp_path):
    body = "".join(f"    v{i} = x * {i} + helper_{i % 3}(x)\n" for i in range(400))
    root = write(tmp_path / "p", {"big.py": f"def big(x):\n{body}    return v0\n"})
    gen = FakeDocGenerator(max_seq_length=1500)
    seen = {}
    real = gen._result
    gen._result = lambda c: (seen.__setitem__(c.name, c), real(c))[1]
    out, _ = run_fake(root, gen, max_seq_length=1500, max_new_tokens=128)
    parts = [n for n in seen if "[part" in n]
    assert len(parts) >= 3 and out.report.errors == {}
    whole = seen["big"]
    assert len(whole.code) < 3 * 1500 and "documented in" in whole.code
    assert whole.context.count("- part ") == len(parts)  # every part's summary reaches the whole
    assert out.report.completeness == 1.0


def test_generator_errors_are_reported_and_retried_next_run(tmp_path):
    from app.llm.types import DocResult

    class Flaky(FakeDocGenerator):
        def _result(self, chunk):
            if chunk.name == "mid":
                return DocResult(chunk_id=chunk.id, finish_reason="error", error="out of memory")
            return super()._result(chunk)

    root = write(tmp_path / "p", SRC)
    out, _ = run_fake(root, Flaky())
    assert out.report.errors == {"m.py::mid": "out of memory"} and out.report.completeness < 1.0
    out, gen = run_fake(root)
    # mid was never stored, so it is generated now; top and the module see mid's summary for the
    # first time, so their keys changed as well
    assert sorted(c for c in _chunk_names(gen.generated, root / ".docgen" / "docgen.sqlite")) == ["<module>", "mid", "top"]
    assert out.report.errors == {} and out.report.completeness == 1.0


def test_chunks_are_sized_with_the_generators_own_tokenizer(tmp_path):
    """A dense tokenizer (1 character per token, like a tiny-vocabulary model's) must not let
    prompts overflow the window: the runner calibrates the split size from `count_tokens`."""

    class DenseTokenizerGenerator(FakeDocGenerator):
        overhead = 300

        def count_tokens(self, text):
            return len(text)

        def count_prompt_tokens(self, chunk):
            return self.overhead + len(chunk.code if isinstance(chunk, str) else chunk.code)

    body = "".join(f"    v{i} = x * {i} + helper_{i % 3}(x)\n" for i in range(120))
    root = write(tmp_path / "p", {"big.py": f"def big(x):\n{body}    return v0\n", **SRC})
    window, new = 2048, 128
    gen = DenseTokenizerGenerator(max_seq_length=window)
    seen = []
    real = gen._result
    gen._result = lambda c: (seen.append(c), real(c))[1]
    out, _ = run_fake(root, gen, max_seq_length=window, max_new_tokens=new)
    assert any("[part" in c.name for c in seen)
    for c in seen:  # every prompt fits: overhead + code + callee context + new tokens
        assert gen.overhead + len(c.code) + len(c.context) + new <= window, c.name
    assert out.report.errors == {} and out.report.completeness == 1.0
