"""The model id `docgen run` and `docgen estimate` key stored results by: pinned, so a change to how
the CLI resolves --model cannot orphan the results of existing stores (a new key regenerates all)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from app.cli import main
from app.cli_generators import optimized_factory


class _Stop(Exception):
    pass


def _run_key(model: str) -> str:
    """The id `docgen run` declares for its generator (the key of every result it stores)."""
    args = argparse.Namespace(model=model, window=2048, max_new_tokens=8, temperature=0.0, quantization=None,
                              max_batch_size=None, speculative=None, draft_model=None, static_cache=None,
                              kv_cache_quantization=None, compile=None, flash_attention=None, hardware=None,
                              quant_lm_head=None, cpu_threads=None)
    return optimized_factory(args, lambda s: None).model_id


def _estimate_key(model: str, tmp_path: Path, monkeypatch) -> str:
    """The id `docgen estimate` looks stored results up by."""
    import app.docgen.audit as audit

    seen = []

    def fake_estimate(path, walk, model, model_id, *a, **k):
        seen.append(model_id)
        raise _Stop

    monkeypatch.setattr(audit, "estimate", fake_estimate)
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    with pytest.raises(_Stop):
        main(["estimate", str(src), "--model", model, "-q"])
    return seen[0]


def _model_dir(at: Path) -> Path:
    at.mkdir(parents=True)
    (at / "config.json").write_text("{}")
    return at


@pytest.mark.parametrize("hub_id", ["Qwen/Qwen2.5-Coder-7B-Instruct", "org/model-v1.5"])
def test_hub_id_key_is_the_id(hub_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _run_key(hub_id) == hub_id
    assert _estimate_key(hub_id, tmp_path, monkeypatch) == hub_id


def test_local_path_keys(tmp_path, monkeypatch):
    """A local folder is keyed by its path as written, `~` expanded and trailing `/` and `./` dropped
    (not resolved to an absolute path: the same relative path from the same folder)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    absolute = _model_dir(tmp_path / "models" / "abs")
    _model_dir(tmp_path / "rel")
    _model_dir(tmp_path / "home" / "m")
    _model_dir(tmp_path / "owner" / "name")  # a local folder that looks like a hub id
    cases = {str(absolute): str(absolute), str(absolute) + "/": str(absolute), "./rel": "rel", "rel": "rel",
             "rel/": "rel", "~/m": str(tmp_path / "home" / "m"), "owner/name": "owner/name"}
    for given, want in cases.items():
        assert _run_key(given) == want, given
        assert _estimate_key(given, tmp_path, monkeypatch) == want, given


def test_estimate_keys_a_missing_local_path_as_written(tmp_path, monkeypatch):
    """estimate reads the store only: a path that does not exist yet keys as run would key it."""
    monkeypatch.chdir(tmp_path)
    assert _estimate_key("./later/model", tmp_path, monkeypatch) == os.path.join("later", "model")
