"""Retry policy: a cut-off doc is retried with a larger limit (or not at all), counts per check are exact."""
import asyncio
import sqlite3

import pytest

from app.docgen.fake_generator import FakeDocGenerator
from app.docgen.pipeline import RunConfig, execute
from app.docgen.planner import PlanConfig, make_plan
from app.docgen.progress import Observer
from app.docgen.report import format_report
from app.docgen.retry import RETRY_FACTOR, RetryStats, decide_retry
from app.docgen.runner import prompt_version
from app.docgen.store import Store
from app.llm.types import CodeChunk
from tests.docgen.conftest import run_fake, write

SRC = {"m.py": ("def leaf(x):\n    return x + 1\n\n\n"
                "def mid(x):\n    return leaf(x) * 2\n\n\n"
                "def top(x):\n    return mid(x) - 1\n\n\n"
                "def other(y):\n    return y\n")}


def test_decide_retry():
    assert decide_retry({"params"}, 64, 512, 100) == decide_retry({"params"}, None, None, 0)
    assert decide_retry({"params"}, 64, 512, 100).retry and decide_retry({"params"}, 64, 512, 100).max_new_tokens == 0
    d = decide_retry({"cut_off", "params"}, 64, 512, 100)
    assert d.retry and d.max_new_tokens == RETRY_FACTOR * 64
    d = decide_retry({"cut_off"}, 64, 200, 100)  # 2x does not fit: capped to the room left
    assert d.retry and d.max_new_tokens == 100
    d = decide_retry({"cut_off"}, 64, 160, 100)  # only 60 tokens left: no larger limit fits
    assert not d.retry and "160-token window" in d.reason
    assert not decide_retry({"cut_off"}, None, 512, 100).retry
    assert decide_retry({"cut_off"}, 64, None, 100).max_new_tokens == 128  # unknown window: the factor alone


def test_retry_stats_count_per_check():
    s = RetryStats()
    s.record({"cut_off", "params"}, {"params"})
    s.record({"params"}, set())
    s.record({"identifiers"}, None)  # the retry errored: nothing fixed
    s.skipped({"cut_off"})
    assert s.by_check() == {"cut_off": {"retried": 1, "fixed": 1, "not_retried": 1},
                            "identifiers": {"retried": 1, "fixed": 0, "not_retried": 0},
                            "params": {"retried": 2, "fixed": 1, "not_retried": 0}}


def test_chunk_limit_must_be_a_count():
    with pytest.raises(ValueError, match="max_new_tokens"):
        CodeChunk(code="x = 1", max_new_tokens=-1)


def _stored(root):
    db = sqlite3.connect(root / ".docgen" / "docgen.sqlite")
    try:
        return {q: (k, t, a) for q, k, t, a in db.execute(
            "SELECT u.qualname, r.key, r.text, r.attempts FROM units u JOIN results r ON r.key = u.key")}
    finally:
        db.close()


def test_cut_off_gets_a_larger_limit_and_counts_are_exact(tmp_path):
    plain_root = write(tmp_path / "plain", SRC)
    run_fake(plain_root, FakeDocGenerator(), retry=False)
    plain = _stored(plain_root)
    # leaf needs 100 new tokens (cut at 64, whole at 128); top needs 500 (cut at 64 and at 128); mid invents a param
    gen = FakeDocGenerator(max_new_tokens=64, needs_tokens={"leaf": 100, "top": 500}, fail_first=("mid",))
    root = write(tmp_path / "p", SRC)
    out, _ = run_fake(root, gen)
    limits = {}
    for name, limit in gen.limits:
        limits.setdefault(name, []).append(limit)
    assert limits["leaf"] == [64, 128] and limits["top"] == [64, 128]  # a cut-off doc: twice the limit
    assert limits["mid"] == [64, 64]  # any other failure: the same limit, with the note
    assert limits["other"] == [64]
    rep = out.report
    assert rep.retried == 3
    assert rep.retry_by_check == {"cut_off": {"retried": 2, "fixed": 1, "not_retried": 0},
                                  # mid's invented parameter is also a name the repository lacks
                                  "identifiers": {"retried": 1, "fixed": 1, "not_retried": 0},
                                  "params": {"retried": 1, "fixed": 1, "not_retried": 0}}
    assert "cut_off 1 fixed of 2 retried" in format_report(rep)
    got = _stored(root)
    assert {q: a for q, (_, _, a) in got.items()} == {"<module>": 1, "leaf": 2, "mid": 2, "top": 2, "other": 1}
    # chunks that passed first time: the same text as a run without retries
    assert got["other"][1] == plain["other"][1] and got["<module>"][1] == plain["<module>"][1]
    # a retry never changes the stored key: a rerun reuses all, and leaf's key is the no-retry run's
    assert got["leaf"][0] == plain["leaf"][0]
    again, gen2 = run_fake(root, FakeDocGenerator(max_new_tokens=64))
    assert gen2.calls == 0 and again.report.reused == 5


def test_cut_off_without_room_is_not_retried_and_says_so(tmp_path):
    root = write(tmp_path / "p", SRC)
    plan = make_plan(root, PlanConfig())
    # the window leaves the chunk exactly its first limit: no larger limit fits, so no retry
    gen = FakeDocGenerator(max_new_tokens=64, needs_tokens={"leaf": 100}, max_seq_length=64 + 20)
    store = Store(tmp_path / "s.sqlite")
    try:
        ex = asyncio.run(execute(plan, gen, store, RunConfig(model_id="fake", prompt_version=prompt_version()),
                                 Observer()))
    finally:
        store.close()
    leaf = next(u.uid for u in plan.units if u.qualname == "leaf")
    assert [lim for name, lim in gen.limits if name == "leaf"] == [64]  # one attempt, at the first limit
    assert ex.retried == 0 and ex.retry_stats.by_check() == {"cut_off": {"retried": 0, "fixed": 0, "not_retried": 1}}
    flag = next(f for f in ex.docs[leaf].flags if f["cause"] == "cut_off")
    assert "not retried" in flag["message"] and "window" in flag["message"]
    assert ex.docs[leaf].attempts == 1


def test_decide_retry_skips_checks_no_retry_has_fixed():
    d = decide_retry({"params"}, 64, 512, 100, hopeless={"params": 8})
    assert not d.retry and "params (8 retries)" in d.reason
    assert decide_retry({"params", "cut_off"}, 64, 512, 100, hopeless={"params": 8}).retry  # cut_off may still be fixed
    s = RetryStats()
    for _ in range(3):
        s.record({"params"}, {"params"})
        s.record({"cut_off"}, set())
    assert s.hopeless(3) == {"params": 3} and s.hopeless(4) == {} and s.hopeless(0) == {}


class NeverFixed(FakeDocGenerator):
    """Every doc of the `bad*` functions names an invented parameter, retry or not."""

    def _text(self, chunk):
        text = super()._text(chunk)
        if chunk.name.startswith("bad"):
            text += "\n\nArgs:\n    invented_param: not a parameter at all."
        return text


def test_a_check_no_retry_fixes_is_given_up_after_the_first_few(tmp_path):
    src = {"m.py": "".join(f"def bad{i}(x):\n    return x + {i}\n\n\n" for i in range(6))}
    plan = make_plan(write(tmp_path / "p", src), PlanConfig())
    store = Store(tmp_path / "s.sqlite")
    try:
        cfg = RunConfig(model_id="fake", prompt_version=prompt_version(), batch_size=1, retry_give_up_after=2)
        ex = asyncio.run(execute(plan, NeverFixed(), store, cfg, Observer()))
        cfg0 = RunConfig(model_id="fake", prompt_version=prompt_version(), batch_size=1, retry_give_up_after=0,
                         resume=False)
        ex0 = asyncio.run(execute(plan, NeverFixed(), store, cfg0, Observer()))
    finally:
        store.close()
    # one chunk at a time: bad0 and bad1 are retried (nothing fixed), bad2..bad5 are not
    assert ex.retried == 2 and ex.generated == 7
    stats = ex.retry_stats.by_check()
    assert stats["params"] == {"retried": 2, "fixed": 0, "not_retried": 4}
    skipped = [d for d in ex.docs.values() if d.attempts == 1 and d.flags]
    assert len(skipped) == 4 and all("no retry of" in f["message"] for d in skipped for f in d.flags)
    assert ex0.retried == 6  # 0: every failure retried
