"""app.engine.names: the one home for device, quantization-name and model-path resolution, and
that every layer uses it (no private copies that drift apart)."""
from __future__ import annotations

import ast
import pathlib

import pytest
import torch

from app.engine.config import EngineConfig
from app.engine.names import (is_local_model, looks_like_path, model_key, normalize_quantization, resolve_device,
                              resolve_model_path)

APP = pathlib.Path(__file__).resolve().parents[2] / "app"


@pytest.mark.parametrize("q, want", [(None, None), (False, None), ("none", None), ("None", None), ("", None),
                                     ("4bit", "4bit"), ("8BIT", "8bit"), (" fp8 ", "fp8")])
def test_normalize_quantization(q, want):
    assert normalize_quantization(q) == want


def test_normalize_quantization_rejects_unknown_and_outside_allowed():
    with pytest.raises(ValueError, match="'4bit'"):
        normalize_quantization("3bit")
    with pytest.raises(ValueError, match="not supported"):
        normalize_quantization("fp8", ("4bit", "8bit"))
    with pytest.raises(ValueError):
        normalize_quantization(4)


def test_engine_config_uses_the_shared_normalisation():
    assert EngineConfig(model="x", quantization="NONE").quantization is None
    assert EngineConfig(model="x", quantization="8BIT").quantization == "8bit"
    with pytest.raises(ValueError, match="not supported"):
        EngineConfig(model="x", quantization="2bit")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")


def test_resolve_model_path(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_path(tmp_path) == tmp_path
    assert resolve_model_path(str(tmp_path)) == tmp_path
    with pytest.raises(ValueError, match="has no config.json"):
        resolve_model_path(tmp_path.parent)
    with pytest.raises(ValueError, match="is a file"):
        resolve_model_path(tmp_path / "config.json")
    with pytest.raises(ValueError, match="does not exist"):
        resolve_model_path(tmp_path / "missing")
    with pytest.raises(ValueError, match="local_files_only"):
        resolve_model_path("nobody-here/not-a-cached-model-xyz", local_files_only=True)
    assert looks_like_path("./m") and looks_like_path("a/b/c") and not looks_like_path("Qwen/Qwen2.5")


def _defined_functions(path: pathlib.Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


def test_one_home_each():
    """Each of these is defined in app/engine/names.py and nowhere else in app/."""
    homes = {"resolve_device", "normalize_quantization", "resolve_model_path", "resolve_model_dir", "model_key",
             "is_local_model"}
    for path in APP.rglob("*.py"):
        if path.name == "names.py" and path.parent.name == "engine":
            continue
        found = {n.lstrip("_") for n in _defined_functions(path)} & homes
        assert not found, f"{path.relative_to(APP)} defines its own {sorted(found)}; use app.engine.names"


def test_local_or_hub_is_decided_as_the_loader_decides(tmp_path, monkeypatch):
    """is_local_model (the CLI's question, no hub access) agrees with resolve_model_path: a name it
    calls local never reaches the hub, one it calls a hub id is looked up there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "config.json").write_text("{}")
    (tmp_path / "f.bin").write_text("")
    asked = []
    import huggingface_hub

    def no_hub(repo_id, **kw):
        asked.append(repo_id)
        raise OSError("offline in this test")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    for name in ["here", "./here", "f.bin", "./missing", "a/b/c", "gpt2", "~/nothing-here", "Qwen/Qwen2.5", "o/n"]:
        asked.clear()
        try:
            resolve_model_path(name)
        except ValueError:
            pass
        assert is_local_model(name) == (not asked), name
    assert model_key("./here/") == "here" and model_key("Qwen/Qwen2.5") == "Qwen/Qwen2.5"


def test_names_import_without_torch():
    """The CLI resolves model names with torch unloaded (`docgen estimate` never imports it)."""
    import subprocess
    import sys

    code = "import sys, app.engine.names, app.engine.config; assert 'torch' not in sys.modules, 'torch imported'"
    res = subprocess.run([sys.executable, "-c", code], cwd=APP.parent, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
