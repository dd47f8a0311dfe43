"""Session-scoped fixtures shared by every test package (registered from tests/conftest.py).

- `tiny_checkpoint(preset="tiny", **kwargs) -> Path`: a real HF-format checkpoint with random
  weights (benchmarks.random_checkpoint.build_checkpoint), built once per distinct arguments per
  test session under a session temporary directory.
- `shared_models_dir`: the folder of small trained models (../shared/models), or a clean skip
  where it is absent (e.g. on a user's machine).
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Callable

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_MODELS_CANDIDATES = (REPO_ROOT.parent / "shared" / "models", pathlib.Path("/work/shared/models"))


def _key(preset: str, kwargs: dict[str, Any]) -> str:
    return json.dumps({"preset": preset, **kwargs}, sort_keys=True, default=str)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Callable[..., pathlib.Path]:
    from benchmarks.random_checkpoint import build_checkpoint

    built: dict[str, pathlib.Path] = {}

    def factory(preset: str = "tiny", **kwargs: Any) -> pathlib.Path:
        key = _key(preset, kwargs)
        if key not in built:
            out = tmp_path_factory.mktemp(f"ckpt-{preset}")
            built[key] = build_checkpoint(out, preset, **kwargs)
        return built[key]

    return factory


@pytest.fixture(scope="session")
def shared_models_dir() -> pathlib.Path:
    for candidate in SHARED_MODELS_CANDIDATES:
        if candidate.is_dir():
            return candidate
    pytest.skip("no trained models folder (../shared/models) on this machine")
