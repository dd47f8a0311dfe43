"""Benchmark input: functions and classes cut with `ast` from real Python sources.

Default source: the top-level modules of the running Python's standard library (present on every
machine). Selection is deterministic and stable: every candidate gets a hash of its path and
qualified name, and the N smallest hashes win, so `--chunks 32` is a subset of `--chunks 100` and
the chunks come from many files rather than the first few. Docstrings are cut out of the code
(the model is asked to write them).
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import pathlib
import sysconfig
import textwrap

from app.llm.types import CodeChunk

MIN_LINES, MAX_LINES, MAX_CHARS = 6, 60, 2400


def default_source() -> pathlib.Path:
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def _files(root: pathlib.Path) -> list[pathlib.Path]:
    if root.is_file():
        return [root]
    if root.resolve() == default_source().resolve():
        return sorted(root.glob("*.py"))  # top-level modules: enough variety, parsed in a second or two
    skip = {"site-packages", "node_modules", ".git", ".venv", "venv", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.parts))


def _strip_docstring(node: ast.AST, lines: list[str]) -> str:
    """The node's source lines without its docstring (if it has one)."""
    start, end = node.lineno, node.end_lineno
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str) and len(body) > 1:
        ds = body[0]
        kept = lines[start - 1: ds.lineno - 1] + lines[ds.end_lineno: end]
    else:
        kept = lines[start - 1: end]
    return textwrap.dedent("\n".join(kept))  # methods lose their class indentation


def _candidates(path: pathlib.Path, root: pathlib.Path) -> list[CodeChunk]:
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    lines = text.splitlines()
    rel = str(path.relative_to(root)) if path != root else path.name
    out: list[CodeChunk] = []

    def visit(nodes, prefix: str) -> None:
        for node in nodes:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            qual = f"{prefix}{node.name}"
            n = node.end_lineno - node.lineno + 1
            code = _strip_docstring(node, lines)
            if MIN_LINES <= n <= MAX_LINES and len(code) <= MAX_CHARS and code.strip():
                kind = "class" if isinstance(node, ast.ClassDef) else ("method" if prefix else "function")
                out.append(CodeChunk(code=code, path=rel, name=qual, kind=kind, language="python",
                                     start_line=node.lineno, end_line=node.end_lineno))
            if isinstance(node, ast.ClassDef):
                visit(node.body, qual + ".")

    visit(tree.body, "")
    return out


@functools.lru_cache(maxsize=4)
def _all_candidates(root: str) -> tuple[CodeChunk, ...]:
    # Parsing the standard library takes a second or two; benchmarks and tests ask more than once.
    r = pathlib.Path(root)
    return tuple(c for f in _files(r) for c in _candidates(f, r))


def load_chunks(n: int, source: str | pathlib.Path | None = None) -> list[CodeChunk]:
    """`n` chunks from `source` (a directory or file; default: the standard library)."""
    if n < 1:
        raise ValueError(f"--chunks must be >= 1, got {n}")
    root = pathlib.Path(source) if source else default_source()
    if not root.exists():
        raise ValueError(f"--source {root} does not exist; pass a directory of Python files")
    cands = list(_all_candidates(str(root.resolve())))
    if not cands:
        raise ValueError(f"no functions or classes of {MIN_LINES}-{MAX_LINES} lines found under {root}; "
                         "pass --source with a directory of Python code")
    key = lambda c: hashlib.sha1(f"{c.path}:{c.name}".encode()).hexdigest()  # noqa: E731
    picked = [dataclasses.replace(c) for c in sorted(cands, key=key)[:n]]  # copies: the cache stays intact
    if len(picked) < n:
        raise ValueError(f"only {len(picked)} suitable chunks under {root}, {n} asked for; lower --chunks")
    return picked
