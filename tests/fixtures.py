"""Session-scoped fixtures shared by every test package (registered from tests/conftest.py).

- `tiny_checkpoint(preset="tiny", **kwargs) -> Path`: a real HF-format checkpoint with random
  weights (benchmarks.random_checkpoint.build_checkpoint), built once per distinct arguments per
  test session under a session temporary directory.
- `shared_models_dir`: the folder of small trained models, or a clean skip where it is absent (e.g.
  on a user's machine): $DOCGEN_SHARED_MODELS if set, else `shared/models` beside the repository
  (beside the main checkout when this one is a git worktree).
- `trained_docstring_model`: `docstring-13m` in that folder (a clean skip where it is missing).
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Callable

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_MODELS_ENV = "DOCGEN_SHARED_MODELS"


def _main_checkout(repo: pathlib.Path) -> pathlib.Path:
    """The main working tree: `repo` itself, or for a git worktree (where .git is a file naming
    <main>/.git/worktrees/<name>) the checkout that owns the shared .git folder."""
    dot_git = repo / ".git"
    if not dot_git.is_file():
        return repo
    gitdir = pathlib.Path(dot_git.read_text().partition("gitdir:")[2].strip())
    common = gitdir / "commondir"
    common_dir = (gitdir / common.read_text().strip()).resolve() if common.is_file() else gitdir.parents[1]
    return common_dir.parent


def shared_models_candidates() -> list[pathlib.Path]:
    env = os.environ.get(SHARED_MODELS_ENV)
    if env:
        return [pathlib.Path(env)]  # an explicit choice: no silent fallback to another folder
    return list(dict.fromkeys(root.parent / "shared" / "models" for root in (REPO_ROOT, _main_checkout(REPO_ROOT))))


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
    candidates = shared_models_candidates()
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    pytest.skip(f"no trained models folder on this machine (looked in {', '.join(map(str, candidates))}; "
                f"set {SHARED_MODELS_ENV} to use another)")


@pytest.fixture(scope="session")
def trained_docstring_model(shared_models_dir) -> pathlib.Path:
    path = shared_models_dir / "docstring-13m"
    if not (path / "config.json").is_file():
        pytest.skip(f"docstring-13m is not in {shared_models_dir}")
    return path
