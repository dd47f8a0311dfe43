"""The `docgen` command end to end with the fake generator; estimate and check; no torch needed."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from tests.docgen.conftest import DEMO, REPO


def test_run_estimate_check_without_torch(tmp_path):
    """In a fresh interpreter: the whole CLI with the fake generator never imports torch."""
    demo = tmp_path / "demo"
    shutil.copytree(DEMO, demo)
    code = (
        "import sys\nfrom app.cli import main\n"
        f"assert main(['estimate', {str(demo)!r}]) == 0\n"
        f"assert main(['check', {str(demo)!r}]) == 1\n"
        f"assert main(['run', {str(demo)!r}, '--generator', 'fake', '--plain']) == 0\n"
        f"assert main(['check', {str(demo)!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'the CLI imported torch'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "files: 6  chunks: 26" in out and "estimated time" in out
    assert "missing docs: geometry/measure.py::clamp" in out
    assert "docgen report" in out and "completeness: 100.0%" in out
    assert (demo / "docs" / "index.md").exists() and (demo / "docs" / "geometry" / "shapes.py.md").exists()
    # a later edit makes the generated doc stale
    p = demo / "geometry" / "measure.py"
    p.write_text(p.read_text().replace("max(low, min(value, high))", "min(max(value, low), high)"))
    assert main(["check", str(demo)]) == 1


def test_python_dash_m_app_diff(tmp_path, capsys):
    demo = tmp_path / "demo"
    shutil.copytree(DEMO, demo)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "app", "run", str(demo), "--generator", "fake", "--diff", "--plain",
                          "--languages", "python"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "+++ b/geometry/measure.py" in res.stdout and "human docstrings kept" in res.stdout
    assert "language not selected" in res.stdout  # the skipped JS/Go/Rust files are reported
    assert '"""' not in (demo / "geometry" / "measure.py").read_text()


def test_bad_input_messages(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing"), "--generator", "fake", "--plain"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["estimate", str(tmp_path), "--languages", "cobol"]) == 2
    assert "choose from" in capsys.readouterr().err
    (tmp_path / "a.py").write_text("def f():\n    return 1\n")
    assert main(["run", str(tmp_path), "--model", "./no/such/model", "--plain"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["run", str(tmp_path), "--generator", "fake", "--max-seq-length", "300", "--plain"]) == 2
    assert "raise --max-seq-length" in capsys.readouterr().err


def test_empty_directory_runs(tmp_path, capsys):
    assert main(["run", str(tmp_path), "--generator", "fake", "--plain"]) == 0
    assert "chunks: 0" in capsys.readouterr().out


@pytest.mark.skip(reason="app.llm.local_client_optimized is being built in parallel; wire the end-to-end run "
                         "with ../shared/models/docstring-13m once create_optimized_local_generator lands")
def test_end_to_end_with_tiny_checkpoint(tmp_path):
    model = Path("/work/shared/models/docstring-13m")
    assert main(["run", str(DEMO), "--model", str(model), "--out", str(tmp_path / "docs"),
                 "--store", str(tmp_path / "s.sqlite"), "--plain"]) == 0
