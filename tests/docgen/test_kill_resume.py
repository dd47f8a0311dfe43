"""kill -9 in the middle of a run, then rerun: every chunk documented exactly once, and the kill lost
at most the last group commit (plus what was in flight)."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.docgen.conftest import REPO, write

N_FUNCS = 30
BATCH = 2  # --batch-size: chunks in flight


def _repo(root):
    funcs = "".join(f"def f{i}(x):\n    return x * {i} + {i * i}\n\n\n" for i in range(N_FUNCS))
    return write(root, {"many.py": funcs, "more.js": "function g(a) { return a + 1; }\n"})


def _cmd(root, store, log, delay, every, seconds):
    return [sys.executable, "-m", "app", "run", str(root), "--generator", "fake", "--fake-delay", str(delay),
            "--fake-log", str(log), "--store", str(store), "--batch-size", str(BATCH), "--plain",
            "--commit-every", str(every), "--commit-seconds", str(seconds)]


def _count(store):
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


# (results per group, seconds per group): groups cut by count, and groups cut by time (the count is
# then never reached, so results reach the store during the run only through the time limit)
@pytest.mark.parametrize("every,seconds", [(4, 60.0), (1000, 0.2)])
def test_kill_mid_run_then_resume(tmp_path, every, seconds):
    root = _repo(tmp_path / "repo")
    store, log = tmp_path / "store.sqlite", tmp_path / "gen.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(_cmd(root, store, log, 0.1, every, seconds), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while _count(store) < 10 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first_log = log.read_text().split()
    db = sqlite3.connect(store)
    stored_before = {k for (k,) in db.execute("SELECT key FROM results")}
    total = N_FUNCS + 3  # the functions, g, and two module chunks
    assert 10 <= len(stored_before) < total
    lost = set(first_log) - stored_before
    if every < total:  # at most one unfinished group, plus chunks generated but not yet handed back
        assert len(lost) <= every - 1 + BATCH

    done = subprocess.run(_cmd(root, store, log, 0.0, every, seconds), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reused from the store: " in done.stdout
    second_log = log.read_text().split()[len(first_log):]
    assert not set(second_log) & stored_before  # no finished work done twice
    rows = db.execute("SELECT key, COUNT(*) FROM generations GROUP BY key").fetchall()
    assert len(rows) == total and all(n == 1 for _, n in rows)  # every chunk documented exactly once
    assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == total
    assert db.execute("SELECT COUNT(*) FROM units").fetchone()[0] == total
