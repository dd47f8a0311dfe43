"""Write generated docs back into Python sources as docstrings, safely.

Only docstring statements change: a new docstring is inserted as the first statement of a
module/class/function, or (with `overwrite`) an existing one is replaced. The new source must
parse and be AST-equal to the original once docstrings are removed from both, else the file is
left alone. Human docstrings are kept unless `overwrite`. Files with uncommitted changes (or not
under git) are refused unless `force`, so the user can always review and revert with git.
"""
from __future__ import annotations

import ast
import difflib
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from app.docgen import safe_write
from app.docgen.units import MODULE
from app.docgen.walker import file_base

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass
class DocstringReport:
    written: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # path -> why nothing was written
    kept_human: int = 0  # existing docstrings left as they were
    inserted: int = 0
    replaced: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (uid, why)
    diff: str = ""


def git_state(path: Path) -> str:
    """'clean', 'dirty', 'untracked' or 'no-git' for one file."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", path.name], cwd=path.parent,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "no-git"
    if out.returncode != 0:
        return "no-git"
    line = out.stdout.strip()
    if not line:
        return "clean"
    return "untracked" if line.startswith("??") else "dirty"


def _is_overload(node) -> bool:
    return any(ast.unparse(d).split(".")[-1] == "overload" for d in getattr(node, "decorator_list", []))


def _named_defs(tree: ast.Module) -> dict[str, ast.AST]:
    """Qualname -> node, numbering repeats (#2, #3) in source order as the chunker does."""
    out: dict[str, ast.AST] = {MODULE: tree}
    seen: dict[str, int] = {}

    def visit(body, prefix):
        for node in body:
            if isinstance(node, _DEFS):
                qual = f"{prefix}.{node.name}" if prefix else node.name
                seen[qual] = seen.get(qual, 0) + 1
                out[qual if seen[qual] == 1 else f"{qual}#{seen[qual]}"] = node
                if seen[qual] > 1 and _is_overload(out[qual]):  # the chunker merges overloads into one
                    out[qual] = node  # unit; its doc belongs on the implementation, after the stubs
                if isinstance(node, ast.ClassDef):
                    visit(node.body, qual)

    visit(tree.body, "")
    return out


def strip_docstrings(tree: ast.AST) -> str:
    """ast.dump of the tree with every docstring statement removed."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module,) + _DEFS) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:]
    return ast.dump(tree, include_attributes=False)


def format_docstring(text: str, indent: str) -> list[str]:
    text = text.strip().replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if text.endswith('"'):
        text = text[:-1] + '\\"'
    first, _, rest = text.partition("\n")
    if not rest.strip():
        return [f'{indent}"""{first.strip()}"""']
    body = textwrap.dedent(rest).splitlines()
    return [f'{indent}"""{first.strip()}'] + [f"{indent}{ln}".rstrip() for ln in body] + [f'{indent}"""']


def _first_line(stmt: ast.stmt) -> int:
    return min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])


def plan_edits(source: str, docs: dict[str, str], overwrite: bool, rep: DocstringReport, path: str):
    """(start line, end line exclusive, new lines) per edit, 0-based; docs maps qualname -> text."""
    tree = ast.parse(source)
    lines = source.splitlines()
    defs = _named_defs(tree)
    edits = []
    for qual, text in docs.items():
        node = defs.get(qual)
        if node is None:
            rep.skipped.append((f"{path}::{qual}", "not found by the Python parser"))
            continue
        body = node.body
        has_doc = bool(body) and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str)
        if has_doc and not overwrite:
            rep.kept_human += 1
            continue
        if not body:  # an empty module
            edits.append((len(lines), len(lines), format_docstring(text, "")))
            rep.inserted += 1
            continue
        first = body[0]
        start = _first_line(first) - 1
        prefix = lines[start][: first.col_offset] if not has_doc else lines[first.lineno - 1][: first.col_offset]
        if prefix.strip():
            rep.skipped.append((f"{path}::{qual}", "its body starts on the definition line"))
            continue
        indent = "" if isinstance(node, ast.Module) else prefix
        if has_doc:
            doc = body[0]
            tail = lines[doc.end_lineno - 1][doc.end_col_offset:].strip()
            if (tail and not tail.startswith("#")) or (len(body) > 1 and body[1].lineno == doc.end_lineno):
                rep.skipped.append((f"{path}::{qual}", "its docstring shares a line with code"))
                continue
            edits.append((doc.lineno - 1, doc.end_lineno, format_docstring(text, indent)))
            rep.replaced += 1
        else:
            edits.append((start, start, format_docstring(text, indent)))
            rep.inserted += 1
    return tree, edits


def apply_edits(source: str, edits) -> str:
    newline = "\r\n" if "\r\n" in source else "\n"
    lines = source.splitlines()
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        lines[start:end] = new
    return newline.join(lines) + (newline if source.endswith(("\n", "\r")) or not source else "")


def write_docstrings(root: Path, files: dict[str, dict[str, str]], mode: str, force: bool = False,
                     overwrite: bool = False) -> DocstringReport:
    """`files`: relative path -> {qualname: doc text}. `mode`: 'write' or 'diff'."""
    if mode not in ("write", "diff"):
        raise ValueError("mode must be 'write' (change files) or 'diff' (print a patch)")
    rep = DocstringReport()
    diffs = []
    for rel, docs in sorted(files.items()):
        path = root / rel if root.is_dir() else file_base(root) / rel
        if path.is_symlink():  # swapped for a link since it was read: neither read nor written through
            rep.refused[rel] = "is a symbolic link now (docgen does not write through links); left alone"
            continue
        if mode == "write" and not force:
            state = git_state(path)
            if state != "clean":
                why = {"dirty": "has uncommitted changes", "untracked": "is not committed to git",
                       "no-git": "is not in a git repository, so it could not be reverted"}[state]
                rep.refused[rel] = f"{why}; commit it first or pass --force"
                continue
        original = path.read_text(encoding="utf-8")
        try:
            tree, edits = plan_edits(original, docs, overwrite, rep, rel)
        except SyntaxError as exc:
            rep.refused[rel] = f"does not parse as Python ({exc.msg}, line {exc.lineno})"
            continue
        if not edits:
            continue
        new = apply_edits(original, edits)
        try:
            same = strip_docstrings(ast.parse(new)) == strip_docstrings(tree)
        except SyntaxError as exc:
            same, why = False, f"the edited file would not parse ({exc.msg}); left unchanged"
        else:
            why = "the edit would change more than docstrings; left unchanged"
        if not same:
            rep.refused[rel] = why
            continue
        if mode == "diff":
            diffs.append("".join(difflib.unified_diff(original.splitlines(keepends=True), new.splitlines(keepends=True),
                                                      fromfile=f"a/{rel}", tofile=f"b/{rel}")))
        else:
            try:  # atomic, and never through a link (a source swapped for one mid-run, a hard link)
                safe_write.write_text(root if root.is_dir() else file_base(root), rel, new, encoding="utf-8")
            except (safe_write.UnsafeWrite, OSError) as exc:
                rep.refused[rel] = f"not written: {exc}"
                continue
            rep.written.append(rel)
    rep.diff = "".join(diffs)
    return rep
