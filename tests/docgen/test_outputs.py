"""Output folders: checked before the model loads, never merged with files docgen did not write,
one-file runs update one page and one index entry, deleted sources lose their pages, names are
escaped in links, the store stays out of `git status`, an emptied source is reported."""
import re
import subprocess
import urllib.parse

import pytest

from app.cli import main
from app.docgen.fake_generator import FakeDocGenerator
from app.docgen.progress import Observer
from app.docgen.runner import RunOptions, run_docgen
from tests.docgen.conftest import git_init, run_fake, write

SRC = {"a.py": "def f(x):\n    return x\n", "pkg/b.py": "def g(y):\n    return y\n"}


def _run(root, *args):
    return main(["run", str(root), "--generator", "fake", "--plain", *args])


def test_out_at_a_file_fails_before_the_model_loads(tmp_path, capsys):
    root = write(tmp_path / "r", {**SRC, "notes.txt": "x"})
    loaded = []
    with pytest.raises(ValueError, match="is a file"):
        run_docgen(RunOptions(path=root, out=root / "notes.txt"), lambda: loaded.append(1) or FakeDocGenerator(),
                   Observer())
    assert loaded == []
    assert _run(root, "--out", str(root / "notes.txt")) == 2
    assert "is a file" in capsys.readouterr().err


def test_one_file_run_updates_its_page_and_index_entry(tmp_path):
    root = write(tmp_path / "r", SRC)
    git_init(root)
    run_fake(root)
    docs = root / "docs"
    before = {p: p.read_bytes() for p in docs.rglob("*.md")}
    (root / "pkg" / "b.py").write_text("def g(y):\n    return y + 1\n")
    out, gen = run_fake(root / "pkg" / "b.py")
    assert gen.calls == 1  # g only: b.py's module skeleton did not change, and a.py is not in this run
    assert not (root / "pkg" / "docs").exists() and not (root / "pkg" / ".docgen").exists()
    changed = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md") if p.read_bytes() != before.get(p))
    assert changed == ["pkg/b.py.md"]  # the index entry is the same (1/1 documented) so the index is too
    index = (docs / "index.md").read_text()
    assert "(a.py.md)" in index and "(pkg/b.py.md)" in index


def test_never_merges_into_a_folder_docgen_did_not_write(tmp_path, capsys):
    root = write(tmp_path / "r", {**SRC, "docs/conf.py": "project = 'x'\n", "docs/index.rst": "Hi\n"})
    assert _run(root) == 2
    err = capsys.readouterr().err
    assert "conf.py" in err and "index.rst" in err and "--out" in err
    assert sorted(p.name for p in (root / "docs").iterdir()) == ["conf.py", "index.rst"]
    assert _run(root, "--out", str(root / "pkg")) == 2  # a source package: refused, a.py never dropped
    assert "b.py" in capsys.readouterr().err
    assert _run(root, "--out", str(root / "docs" / "api")) == 0
    out = capsys.readouterr().out
    assert "not scanned: docs/api/ (docgen's Markdown output folder)" in out
    assert (root / "docs" / "api" / "docs" / "conf.py.md").exists()  # docs/ itself is still documented
    assert _run(root, "--out", str(root / "docs" / "api")) == 0  # its own pages: rewritten freely


def test_deleted_source_pages_removed_and_edited_pages_kept(tmp_path, capsys):
    root = write(tmp_path / "r", {**SRC, "c.py": "def h():\n    return 0\n"})
    assert _run(root) == 0
    docs = root / "docs"
    (root / "pkg" / "b.py").unlink()
    (root / "c.py").unlink()
    (docs / "c.py.md").write_text("my own notes\n")  # edited by hand: docgen leaves it
    assert _run(root) == 1
    out = capsys.readouterr().out
    assert not (docs / "pkg" / "b.py.md").exists() and "1 pages of deleted sources removed" in out
    assert (docs / "c.py.md").read_text() == "my own notes\n" and "c.py.md was edited since docgen wrote it" in out
    assert "pkg/b.py" not in (docs / "index.md").read_text()


def test_hostile_and_spaced_names_are_escaped_in_links(tmp_path):
    evil = "x](http:evil.example)y.py"
    root = write(tmp_path / "r", {evil: "def f():\n    return 1\n", "with space.py": "def g():\n    return 2\n"})
    run_fake(root)
    index = (root / "docs" / "index.md").read_text()
    targets = re.findall(r"(?<!\\)\]\(([^)]*)\)", index)  # every link target a Markdown reader would see
    assert sorted(targets) == sorted([urllib.parse.quote(evil + ".md"), "with%20space.py.md"])
    for t in targets:
        assert (root / "docs" / urllib.parse.unquote(t)).is_file()
    assert "http:evil.example" not in "".join(targets)


def test_git_status_clean_after_a_run(tmp_path):
    root = write(tmp_path / "r", SRC)
    git_init(root)

    def status():
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.splitlines()

    assert _run(root, "--out", str(tmp_path / "site")) == 0
    assert status() == []  # the store (.docgen/, with its WAL and lock files) is ignored by its own .gitignore
    assert (root / ".docgen" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert _run(root) == 0
    # the default docs/ is the run's product, left for the user to commit (or ignore)
    assert sorted(status()) == ["?? docs/a.py.md", "?? docs/index.md", "?? docs/pkg/b.py.md"]


def test_emptied_source_is_reported_not_skipped_silently(tmp_path, capsys):
    root = write(tmp_path / "r", SRC)
    assert _run(root) == 0
    (root / "a.py").write_text("")
    assert _run(root) == 1
    out = capsys.readouterr().out
    assert "warning: a.py is empty now but had 23 bytes at the last run" in out
    assert (root / "docs" / "a.py.md").exists() and "(a.py.md)" in (root / "docs" / "index.md").read_text()
    assert _run(root) == 0  # said once; the next run only counts it among skipped files


def test_pages_of_a_docgen_without_the_page_ledger_are_adopted(tmp_path):
    """Upgrading: docs/ written by an older docgen (store without page records) is recognised as
    docgen's when every file in it is its index or a page of a source the store documented."""
    import sqlite3

    root = write(tmp_path / "r", SRC)
    assert _run(root) == 0
    db = sqlite3.connect(root / ".docgen" / "docgen.sqlite")
    with db:
        db.execute("DELETE FROM pages")
    db.close()
    assert _run(root) == 0
    (root / "docs" / "README.md").write_text("mine\n")  # one foreign file: nothing adopted, refused
    with sqlite3.connect(root / ".docgen" / "docgen.sqlite") as db:
        db.execute("DELETE FROM pages")
    assert _run(root) == 2
