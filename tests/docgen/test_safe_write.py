"""safe_write: atomic replacement that keeps the mode and never writes through a link; and a docgen
process killed inside a write (after the temporary file, before the rename) leaves the file intact."""
import ast
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from app.docgen import safe_write
from app.docgen.safe_write import UnsafeWrite
from tests.docgen.conftest import REPO, write


def test_replaces_keeps_mode_and_leaves_no_temp(tmp_path):
    (tmp_path / "a.py").write_text("old\n")
    os.chmod(tmp_path / "a.py", 0o751)
    safe_write.write_text(tmp_path, "a.py", "new\r\nline\n")
    assert (tmp_path / "a.py").read_bytes() == b"new\r\nline\n"  # bytes as given: CRLF kept
    assert stat.S_IMODE(os.stat(tmp_path / "a.py").st_mode) == 0o751
    safe_write.write_text(tmp_path, "sub/dir/new.md", "x")  # folders created below the confining one
    assert (tmp_path / "sub" / "dir" / "new.md").read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == ["a.py", "sub"]


def test_refuses_links_and_escapes(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "link.md").symlink_to(outside / "secret")
    (tree / "docs").symlink_to(outside)
    os.link(outside / "secret", tree / "hard.py")
    (tree / "ok.py").write_text("x")
    with pytest.raises(UnsafeWrite, match="symbolic link"):
        safe_write.write_text(tree, "link.md", "evil")
    with pytest.raises(UnsafeWrite, match="symbolic link or not a folder"):
        safe_write.write_text(tree, "docs/secret", "evil")
    with pytest.raises(UnsafeWrite, match="hard link"):
        safe_write.write_text(tree, "hard.py", "evil")
    with pytest.raises(UnsafeWrite, match="plain relative path"):
        safe_write.write_text(tree, "../outside/secret", "evil")
    with pytest.raises(UnsafeWrite):
        safe_write.remove(tree, "link.md")
    assert (outside / "secret").read_text() == "keep" and sorted(os.listdir(outside)) == ["secret"]
    assert (tree / "link.md").is_symlink()
    assert safe_write.remove(tree, "ok.py") and not safe_write.remove(tree, "ok.py")


def test_stale_temp_of_a_killed_write_is_removed_by_the_next(tmp_path):
    (tmp_path / "a.py").write_text("old")
    stale = tmp_path / f".a.py.0123abcd{safe_write.TMP_SUFFIX}"
    stale.write_text("half")
    other = tmp_path / f".b.py.4567cdef{safe_write.TMP_SUFFIX}"  # another target's, also from a killed write
    other.write_text("half")
    mine = tmp_path / ".b.py.notdocgen"  # not a name docgen makes: kept
    mine.write_text("user's")
    safe_write.write_text(tmp_path, "a.py", "new")
    assert not stale.exists() and not other.exists() and mine.exists()


# Runs the CLI with os.replace stopped before renaming a temporary file over NAME, so the parent can
# kill it at exactly that moment.
_HOOK = """
import os, sys, time
flag, name = sys.argv[1], sys.argv[2]
real = os.replace
def stuck(src, dst, *a, **kw):
    if os.fspath(dst) == name:
        open(flag, "w").close()
        time.sleep(300)
    return real(src, dst, *a, **kw)
os.replace = stuck
from app.cli import main
sys.exit(main(sys.argv[3:]))
"""

SRC = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(40))


def _run_killed_at(tmp_path, root, name, args):
    flag = tmp_path / "at-rename"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _HOOK, str(flag), name, "run", str(root), "--generator", "fake",
                             "--plain", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not flag.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert flag.exists(), f"never reached the rename: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return env


@pytest.mark.parametrize("target", ["source", "page"])
def test_kill_between_temp_write_and_rename_leaves_the_file_intact(tmp_path, target):
    root = write(tmp_path / "r", {"lib.py": SRC})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if target == "source":
        path, name, args = root / "lib.py", "lib.py", ["--write", "--force"]
    else:  # a page docgen wrote before, being rewritten after the source changed
        subprocess.run([sys.executable, "-m", "app", "run", str(root), "--generator", "fake", "--plain"],
                       cwd=REPO, env=env, check=True, capture_output=True)
        (root / "lib.py").write_text(SRC.replace("x + 3", "x + 33"))
        path, name, args = root / "docs" / "lib.py.md", "lib.py.md", []
    before = path.read_bytes()
    _run_killed_at(tmp_path, root, name, args)
    assert path.read_bytes() == before  # the old content, whole: never empty, never half-written
    temps = [p for p in path.parent.iterdir() if p.name.endswith(safe_write.TMP_SUFFIX)]
    assert len(temps) == 1 and temps[0].stat().st_size > 0  # killed after writing the new content
    done = subprocess.run([sys.executable, "-m", "app", "run", str(root), "--generator", "fake", "--plain", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    after = path.read_text()
    assert after.encode() != before  # the rerun did write the new content
    if target == "source":
        assert '"""Handles `f0`' in after and ast.parse(after)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(safe_write.TMP_SUFFIX)]
