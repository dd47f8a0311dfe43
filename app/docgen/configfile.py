"""Project settings from `.docgen.toml` or `[tool.docgen]` in pyproject.toml.

Keys: include, exclude (lists of globs), out (folder, relative to the config file), model,
languages (list or comma-separated string). Flags on the command line win; --exclude adds to
the file's excludes. Unknown keys are an error, so a typo does not silently do nothing.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

KEYS = {"include", "exclude", "out", "model", "languages"}


@dataclass
class ProjectConfig:
    source: Path | None = None  # the file the settings came from
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    out: Path | None = None
    model: str | None = None
    languages: list[str] | None = None


def _globs(value, key: str, source: Path) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{source}: `{key}` must be a list of glob strings, e.g. {key} = [\"tests\"]")
    return value


def find_config(path: Path) -> tuple[Path, dict] | None:
    """The nearest `.docgen.toml`, or pyproject.toml with a [tool.docgen] table, at or above `path`."""
    start = path.resolve() if path.is_dir() else path.resolve().parent
    for folder in [start, *start.parents]:
        dot = folder / ".docgen.toml"
        if dot.is_file():
            return dot, _read(dot)
        py = folder / "pyproject.toml"
        if py.is_file():
            table = _read(py).get("tool", {}).get("docgen")
            if table is not None:
                return py, table
        if (folder / ".git").exists():
            break  # settings of an enclosing repository are not this project's
    return None


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


def load_project_config(path: Path) -> ProjectConfig:
    found = find_config(path)
    if found is None:
        return ProjectConfig()
    source, table = found
    if not isinstance(table, dict):
        raise ValueError(f"{source}: [tool.docgen] must be a table")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ValueError(f"{source}: unknown docgen setting(s) {unknown}; known: {sorted(KEYS)}")
    cfg = ProjectConfig(source=source)
    cfg.include = _globs(table.get("include", []), "include", source)
    cfg.exclude = _globs(table.get("exclude", []), "exclude", source)
    if "out" in table:
        if not isinstance(table["out"], str):
            raise ValueError(f"{source}: `out` must be a folder path string")
        cfg.out = (source.parent / table["out"]).resolve()
    if "model" in table:
        if not isinstance(table["model"], str):
            raise ValueError(f"{source}: `model` must be a hub id or a folder path string")
        local = source.parent / table["model"]
        cfg.model = str(local.resolve()) if table["model"].startswith(".") else table["model"]
    if "languages" in table:
        langs = table["languages"]
        cfg.languages = [langs] if isinstance(langs, str) else _globs(langs, "languages", source)
    return cfg
