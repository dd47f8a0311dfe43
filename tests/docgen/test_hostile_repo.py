"""Hostile repositories: links in docs/, in the store folder and among sources never make docgen
write outside the tree (or through a hard link); a location the user names is taken as named."""
import os

import pytest

from app.cli import main
from app.docgen.fake_generator import FakeDocGenerator
from tests.docgen.conftest import run_fake, write

SRC = {"m.py": "def f(x):\n    return x\n", "pkg/a.py": "def g(y):\n    return y\n"}


@pytest.fixture
def outside(tmp_path):
    d = tmp_path / "elsewhere"
    d.mkdir()
    (d / "somefile").write_text("precious\n")
    return d


def _untouched(outside):
    assert sorted(os.listdir(outside)) == ["somefile"] and (outside / "somefile").read_text() == "precious\n"


def _run(root, *args):
    return main(["run", str(root), "--generator", "fake", "--plain", *args])


def test_docs_folder_linked_outside(tmp_path, outside, capsys):
    root = write(tmp_path / "r", SRC)
    (root / "docs").symlink_to(outside)
    assert _run(root) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and f"--out {outside}" in err and "Traceback" not in err
    _untouched(outside)
    # named on the command line, it is taken as meant (and it holds a file docgen did not write: refused)
    assert _run(root, "--out", str(outside)) == 2
    assert "somefile" in capsys.readouterr().err
    (outside / "api").mkdir()
    assert _run(root, "--out", str(outside / "api")) == 0
    assert (outside / "api" / "index.md").exists() and (outside / "api" / "pkg" / "a.py.md").exists()


def test_links_inside_docs(tmp_path, outside, capsys):
    root = write(tmp_path / "r", SRC)
    (root / "docs").mkdir()
    (root / "docs" / "index.md").symlink_to(outside / "somefile")
    assert _run(root) == 2
    assert "index.md (a link)" in capsys.readouterr().err
    _untouched(outside)
    (root / "docs" / "index.md").unlink()
    os.link(outside / "somefile", root / "docs" / "m.py.md")
    assert _run(root) == 2  # a file docgen did not write (and hard-linked)
    assert "m.py.md" in capsys.readouterr().err
    _untouched(outside)


def test_store_folder_links(tmp_path, outside, capsys):
    root = write(tmp_path / "r", SRC)
    (root / ".docgen").symlink_to(outside)
    assert _run(root) == 2
    assert f"--store {outside / 'docgen.sqlite'}" in capsys.readouterr().err
    _untouched(outside)
    (root / ".docgen").unlink()
    (root / ".docgen").mkdir()
    (root / ".docgen" / "docgen.sqlite").symlink_to(outside / "somefile")
    assert _run(root) == 2
    assert "symbolic link" in capsys.readouterr().err
    _untouched(outside)
    (root / ".docgen" / "docgen.sqlite").unlink()
    (root / ".docgen" / "docgen.sqlite-wal").symlink_to(outside / "somefile")
    assert _run(root) == 2
    _untouched(outside)


def test_hard_linked_source_is_not_written_through(tmp_path, outside):
    root = write(tmp_path / "r", SRC)
    os.link(root / "m.py", outside / "m_copy.py")
    out, _ = run_fake(root, write_mode="write", force=True)
    rep = out.docstrings
    assert "pkg/a.py" in rep.written and "m.py" in rep.refused and "hard link" in rep.refused["m.py"]
    assert (outside / "m_copy.py").read_text() == SRC["m.py"] == (root / "m.py").read_text()


def test_source_swapped_for_a_link_mid_run(tmp_path, outside):
    """Between reading (planning) and writing back, m.py becomes a link to a file outside."""
    root = write(tmp_path / "r", SRC)

    class Swapper(FakeDocGenerator):
        def _result(self, chunk):
            if not (root / "m.py").is_symlink():
                (root / "m.py").unlink()
                (root / "m.py").symlink_to(outside / "somefile")
            return super()._result(chunk)

    out, _ = run_fake(root, Swapper(), write_mode="write", force=True)
    assert "symbolic link" in out.docstrings.refused["m.py"]
    _untouched(outside)
    assert '"""' in (root / "pkg" / "a.py").read_text()  # the other file was still written
