"""CLI conventions: --version, --quiet/--verbose/--debug, warnings in flag names without Python
locations, Ctrl-C and broken pipes, --exclude ./x, compiled JS and .d.cts skipped, the config
file, the default model by hardware."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from app.cli import main
from app.cli_support import Verbosity, in_flag_names, install_warning_format
from app.docgen.configfile import load_project_config
from app.docgen.fake_generator import FakeDocGenerator
from app.docgen.hardware import Hardware, context_window, default_model, parameter_count
from app.docgen.walker import WalkConfig, walk
from tests.docgen.conftest import DEMO, REPO, write


def test_version_and_global_flags_before_or_after(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("docgen ")


def test_quiet_run_prints_nothing_and_verbose_lists_skips(tmp_path, capsys):
    root = write(tmp_path / "p", {"a.py": "def f(x):\n    return x\n", "notes.txt": "x"})
    assert main(["run", str(root), "--generator", "fake", "--plain", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert main(["-v", "estimate", str(root), "--model", "fake"]) == 0
    assert "skipped notes.txt: not a supported language" in capsys.readouterr().out


def test_warnings_name_flags_and_hide_python_locations(capsys):
    assert in_flag_names("use_flash_attention=True: needs CUDA (pass use_flash_attention=False to silence this)") \
        == "--flash-attention: needs CUDA (pass --no-flash-attention to silence this)"
    assert in_flag_names("max_seq_length=4096 exceeds; quantization='8bit': no") == \
        "--max-seq-length 4096 exceeds; --quantization 8bit: no"
    saved = warnings.showwarning
    try:
        install_warning_format(Verbosity(), hide=(r"^max_seq_length=\d+ exceeds",))
        warnings.warn("enable_compilation=True: no CUDA", UserWarning)
        warnings.warn("max_seq_length=4096 exceeds what this model supports; using 2048", UserWarning)
        err = capsys.readouterr().err
        assert err == "docgen: warning: --compile: no CUDA\n"  # no file:line, and the cap is not repeated
        install_warning_format(Verbosity(debug=True))
        warnings.warn("enable_compilation=True: again", UserWarning)
        assert ".py:" in capsys.readouterr().err  # --debug shows where
    finally:
        warnings.showwarning = saved


def test_ctrl_c_says_what_was_saved(tmp_path, capsys, monkeypatch):
    root = write(tmp_path / "p", {f"m{i}.py": f"def f{i}(x):\n    return x + {i}\n" for i in range(6)})
    real = FakeDocGenerator.generate_async
    calls = []

    async def interrupted(self, chunk):
        calls.append(chunk)
        if len(calls) == 3:  # two chunks done (and committed one by one), Ctrl-C in the third
            raise KeyboardInterrupt
        return await real(self, chunk)

    monkeypatch.setattr(FakeDocGenerator, "generate_async", interrupted)
    assert main(["run", str(root), "--generator", "fake", "--plain", "--batch-size", "1", "--fast",
                 "--commit-every", "1"]) == 130
    err = capsys.readouterr().err
    assert "interrupted; saved 2 results; rerun to resume" in err and "Traceback" not in err


def test_broken_pipe_is_quiet(tmp_path):
    demo = tmp_path / "demo"
    write(demo, {f"m{i}.py": f"def f{i}(x):\n    return x + {i}\n" for i in range(40)})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = f"{sys.executable} -m app run {demo} --generator fake --diff --plain | true"  # the reader never reads
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 141, res.stderr[-2000:]  # pipefail: docgen's own status, the SIGPIPE convention
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr, res.stderr[-2000:]


def test_exclude_forms_compiled_js_and_declaration_files(tmp_path):
    root = write(tmp_path / "p", {"tests/t.py": "def t():\n    pass\n", "src/a.ts": "export const a = 1;\n",
                                  "src/a.js": "exports.a = 1;\n", "src/b.js": "exports.b = 2;\n",
                                  "src/c.d.cts": "export declare const c: number;\n",
                                  "src/d.d.mts": "export declare const d: number;\n"})
    for pattern in ("./tests", "tests/", "./tests/", "tests"):
        files = {f.rel for f in walk(root, WalkConfig(exclude=[pattern])).files}
        assert files == {"src/a.ts", "src/b.js"}, pattern
    res = walk(root, WalkConfig())
    reasons = dict(res.skipped_files)
    assert reasons["src/a.js"] == "compiled JavaScript of a TypeScript source beside it"
    # hand-written declarations (npm left-pad's index.d.ts) are not called generated
    assert reasons["src/c.d.cts"] == reasons["src/d.d.mts"] == "type declarations only (.d.ts): documented where the code is"


def test_config_file(tmp_path, capsys):
    root = write(tmp_path / "p", {"pkg/a.py": "def f(x):\n    return x\n", "pkg/gen/b.py": "def g():\n    pass\n",
                                  "scripts/s.py": "def s():\n    pass\n",
                                  "pyproject.toml": '[tool.docgen]\ninclude = ["pkg"]\nexclude = ["./pkg/gen/"]\n'
                                                    'out = "site/api"\nmodel = "fake-from-config"\n'})
    cfg = load_project_config(root)
    assert cfg.include == ["pkg"] and cfg.out == (root / "site" / "api").resolve() and cfg.model == "fake-from-config"
    assert main(["estimate", str(root)]) == 0
    out = capsys.readouterr().out
    assert "model: fake-from-config (from pyproject.toml)" in out and "files: 1 " in out
    assert main(["run", str(root), "--generator", "fake", "--plain"]) == 0
    assert (root / "site" / "api" / "pkg" / "a.py.md").is_file()
    (root / ".docgen.toml").write_text('exclud = ["x"]\n')
    assert main(["estimate", str(root)]) == 2
    assert "unknown docgen setting(s) ['exclud']" in capsys.readouterr().err


def test_default_model_follows_the_hardware():
    assert default_model(Hardware("gpu", "H100", 80.0, 16)).model.endswith("7B-Instruct")
    small = default_model(Hardware("gpu", "T400", 4.0, 8))
    cpu = default_model(Hardware("cpu", cpu_cores=2))
    assert small.model == cpu.model and cpu.model.endswith("1.5B-Instruct") and cpu.quantization == "8bit"
    qwen7 = {"hidden_size": 3584, "num_hidden_layers": 28, "vocab_size": 152064, "intermediate_size": 18944,
             "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768}
    assert 7.5e9 < parameter_count(qwen7) < 7.7e9
    assert context_window(qwen7, None) == 4096 and context_window({"max_position_embeddings": 2048}, None) == 2048
    assert context_window({"max_position_embeddings": 2048}, 1024) == 1024


def test_first_line_names_the_model(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "app", "estimate", str(DEMO)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    first = res.stdout.splitlines()[0]
    assert first.startswith("docgen: model: Qwen/Qwen2.5-Coder-") and "default for" in first


def test_estimate_after_a_fast_run(tmp_path, capsys):
    root = write(tmp_path / "p", {"m.py": "def leaf(x):\n    return x\n\n\ndef top(x):\n    return leaf(x)\n"})
    assert main(["run", str(root), "--generator", "fake", "--plain", "--fast", "-q"]) == 0
    assert main(["estimate", str(root), "--model", "fake", "--fast"]) == 0
    assert "in the store already: 3 of 3; to generate: 0" in capsys.readouterr().out
    assert main(["estimate", str(root), "--model", "fake"]) == 0  # with callee context the keys differ
    assert "to generate: 0" not in capsys.readouterr().out
