"""Two runs on one store: the second waits for the first (naming its pid), then reuses its work;
no traceback, no lost batch. And writers without the lock (the library used directly) upsert."""
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from app.docgen.store import Store, StoredResult
from app.docgen.store_lock import StoreBusy, StoreLock
from tests.docgen.conftest import REPO, write

N = 12


def _cmd(root, store, *extra):
    return [sys.executable, "-m", "app", "run", str(root), "--generator", "fake", "--store", str(store),
            "--batch-size", "2", "--plain", *extra]


def test_two_concurrent_runs_on_one_store(tmp_path):
    """The first run holds the lock and generates nothing until the second has said it waits (a
    gate file), so the overlap never depends on how fast either process starts."""
    root = write(tmp_path / "r", {"m.py": "".join(f"def f{i}(x):\n    return x * {i}\n\n\n" for i in range(N))})
    store = tmp_path / "s" / "docgen.sqlite"
    gate = tmp_path / "gate"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(_cmd(root, store, "--fake-gate", str(gate)), cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = store.with_name("docgen.sqlite.lock")
    deadline = time.time() + 60
    while time.time() < deadline and first.poll() is None and f"pid {first.pid}" not in _read(lock):
        time.sleep(0.02)
    assert first.poll() is None, "the first run ended before the second started"
    second = subprocess.Popen(_cmd(root, store), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    watchdog = threading.Timer(60, gate.touch)  # if the second never says it waits, the test fails, not hangs
    watchdog.start()
    lines = []
    for line in second.stdout:  # it says it waits, then blocks on the lock
        lines.append(line)
        if "waiting: another docgen run" in line:
            break
    gate.touch()
    out1, err1 = first.communicate(timeout=120)
    rest, err2 = second.communicate(timeout=120)
    out2 = "".join(lines) + rest
    watchdog.cancel()
    assert first.returncode == 0 and second.returncode == 0, err1[-2000:] + err2[-2000:]
    assert "Traceback" not in err1 + err2
    assert f"waiting: another docgen run (pid {first.pid}" in out2
    assert f"generated: {N + 1} " in out1 and f"reused from the store: {N + 1}" in out2
    db = sqlite3.connect(store)
    assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == N + 1
    assert db.execute("SELECT COUNT(DISTINCT key), COUNT(*) FROM generations").fetchone() == (N + 1, N + 1)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _read(path):
    try:
        return path.read_text()
    except OSError:
        return ""


def test_unlocked_writers_of_the_same_keys_upsert(tmp_path):
    """Two connections commit overlapping batches at once (what two runs did before the lock):
    no IntegrityError, every result kept once, every generation logged."""
    path = tmp_path / "s.sqlite"
    Store(path).close()
    errors = []

    def writer(tag):
        store = Store(path)
        try:
            for b in range(0, 40, 4):
                items = [(StoredResult(key=f"k{i}", text=f"doc {i}", summary="s"), f"u{i}", "p.py", f"q{i}", "h")
                         for i in range(b, b + 4)]
                store.put_many(items, run_id=tag, replace=False)
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = Store(path)
    assert store.count("results") == 40 and store.count("generations") == 80 and store.count("units") == 40
    assert store.get("k7").text == "doc 7"


def test_lock_names_its_holder_and_is_released(tmp_path):
    store = tmp_path / "docgen.sqlite"
    said = []
    with StoreLock(store, said.append):
        with pytest.raises(StoreBusy, match=f"in use by pid {os.getpid()} since"):
            with StoreLock(store, said.append, poll_seconds=0.01, timeout=0.05):
                pass
    assert said and f"pid {os.getpid()}" in said[0]
    with StoreLock(store, said.append, timeout=0):  # released on exit: taken at once
        pass
