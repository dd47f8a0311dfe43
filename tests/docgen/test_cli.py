"""The `docgen` command end to end with the fake generator; estimate and check; no torch needed."""
import os
import re
import shutil
import subprocess
import sys

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
        f"assert main(['check', {str(demo)!r}]) == 1\n"  # docs only in docgen's store are not in the source
        f"assert main(['check', {str(demo)!r}, '--include-generated']) == 0\n"
        "assert 'torch' not in sys.modules, 'the CLI imported torch'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "files: 6  chunks: 26" in out and "estimated time" in out
    assert re.search(r"missing docs: geometry/measure.py:\d+: function clamp", out)
    assert "documented only in docgen's store (not in the source)" in out
    assert "docgen report" in out and "completeness: 100.0%" in out
    assert (demo / "docs" / "index.md").exists() and (demo / "docs" / "geometry" / "shapes.py.md").exists()
    # a later edit makes the generated doc stale
    p = demo / "geometry" / "measure.py"
    p.write_text(p.read_text().replace("max(low, min(value, high))", "min(max(value, low), high)"))
    assert main(["check", str(demo), "--include-generated"]) == 1  # stale


def test_python_dash_m_app_diff(tmp_path, capsys):
    demo = tmp_path / "demo"
    shutil.copytree(DEMO, demo)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "app", "run", str(demo), "--generator", "fake", "--diff", "--plain",
                          "--languages", "python"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    # stdout is the patch alone (it can be piped to `git apply`); progress and report go to stderr.
    assert res.stdout.startswith("--- a/") and "+++ b/geometry/measure.py" in res.stdout
    assert "[docgen]" not in res.stdout and "docgen report" not in res.stdout
    assert "human docstrings kept" in res.stderr and res.stderr.startswith("docgen: model: fake")
    assert "language not selected" in res.stderr  # the skipped JS/Go/Rust files are reported
    assert '"""' not in (demo / "geometry" / "measure.py").read_text()
    subprocess.run(["git", "apply", "--check", "-"], cwd=demo, input=res.stdout, text=True, check=True)


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


@pytest.fixture(params=["random-tiny", "trained-13m"])
def tiny_model(request, tiny_checkpoint):
    """Always the locally built random checkpoint; also the trained one where this machine has it."""
    if request.param == "random-tiny":
        return tiny_checkpoint("tiny")
    return request.getfixturevalue("trained_docstring_model")


def test_end_to_end_with_tiny_checkpoint(tmp_path, tiny_model):
    """The real optimized generator on a small repo: everything documented, stored, and reused on rerun."""
    from app.docgen.progress import Observer
    from app.docgen.runner import RunOptions, run_docgen
    from app.llm.local_client_optimized import create_optimized_local_generator

    root = tmp_path / "r"
    root.mkdir()
    (root / "m.py").write_text("def double(x):\n    return x * 2\n\n\ndef quad(x):\n    return double(double(x))\n")
    gen = create_optimized_local_generator(str(tiny_model), quantization="none", use_flash_attention=False,
                                           max_seq_length=1024, max_new_tokens=16)
    real_close, gen.close = gen.close, lambda: None  # one model load serves both runs
    try:
        opts = dict(path=root, max_seq_length=1024, max_new_tokens=16, sampling={"max_new_tokens": 16})
        first = run_docgen(RunOptions(**opts), lambda: gen, Observer())
        assert first.report.errors == {} and first.report.completeness == 1.0
        assert first.report.generated == first.report.chunks == 3
        assert (root / "docs" / "m.py.md").read_text().count("## function") == 2
        second = run_docgen(RunOptions(**opts), lambda: gen, Observer())
        assert second.report.generated == 0 and second.report.reused == 3
    finally:
        real_close()


def test_unloadable_model_is_a_clear_message(tmp_path, capsys, monkeypatch):
    """Offline, nothing cached (or the generator missing): a message that says what to do, no traceback."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "a.py").write_text("def f():\n    return 1\n")
    assert main(["run", str(tmp_path), "--model", "nobody/no-such-model-xyz", "--plain"]) == 2
    err = capsys.readouterr().err
    # The generator imports in this install: the only acceptable failure is the missing model.
    assert "--model /path/to/model" in err and "nobody/no-such-model-xyz" in err, err
    assert "could not be imported" not in err and "Traceback" not in err, err
