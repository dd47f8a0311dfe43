"""Write generated docs back into Python sources as docstrings, safely.

Only docstring statements change: a new docstring is inserted as the first statement of a
module/class/function (right under the header; a body on the definition line, `def f(x): return x`,
moves under it), or (with `overwrite`) an existing one is replaced. Everything else keeps its
bytes: encoding, BOM, line endings, form feeds (`pysource`); the text is escaped so that it reads
back as generated (`pyliteral`). Each edit is checked: the file must parse, be AST-equal to the
original once docstrings are removed, and every docstring must read back as its text. An edit
that fails is dropped alone and reported; the others are written. Human docstrings are kept
unless `overwrite`. Files with uncommitted changes (or not under git) are refused unless `force`,
so the user can always review and revert with git.
"""
from __future__ import annotations

import ast
import difflib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from app.docgen import safe_write
from app.docgen.units import MODULE
from app.docgen.walker import file_base
from app.docgen.writers.pyliteral import format_docstring, normalize_doc
from app.docgen.writers.pysource import PySource, byte_col_to_char, read_source, split_lines

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

    @property
    def failed(self) -> bool:
        """Some documentation that was asked for was not written (the run must not exit 0)."""
        return bool(self.refused or self.skipped)


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


def _ending(line: str) -> str:
    return line[len(line.rstrip("\r\n")):]


def _indent_of(prefix: str) -> str:
    """Indentation as the tokenizer counts it: a form feed resets the column."""
    return prefix.rsplit("\f", 1)[-1]


@dataclass
class Edit:
    qual: str
    start: int  # first line replaced, 0-based
    end: int  # exclusive; == start for a pure insertion
    new: list[str]  # replacement lines, with endings
    text: str  # the documentation this edit must leave as the node's docstring
    replaces: bool = False  # an existing docstring is replaced (else one is inserted)


def _below_header(lines: list[str], row: int, def_row: int) -> int:
    """The docstring goes right under the header, above the body's leading comments and blank
    lines (a `# type:` comment must stay first, so it stays above)."""
    while row - 1 > def_row:
        above = lines[row - 1].strip(" \t\f\r\n")
        if above and (not above.startswith("#") or above.startswith("# type:")):
            break
        row -= 1
    return row


def _edit(node, has_doc: bool, text: str, lines: list[str], src: PySource) -> Edit | str:
    """The edit that gives `node` the docstring `text`, or why it cannot be made."""
    if not normalize_doc(text):
        return "the generated documentation is empty"
    if not node.body:  # an empty module: the docstring goes at the end
        return Edit("", len(lines), len(lines), [ln + src.newline for ln in format_docstring(text, "", src.encoding)],
                    text)
    first = node.body[0]
    decorated = getattr(first, "decorator_list", None)
    row0 = (min(d.lineno for d in decorated) if decorated else first.lineno) - 1
    line0 = lines[row0]
    col0 = len(line0) - len(line0.lstrip(" \t\f")) if decorated else byte_col_to_char(line0, first.col_offset)
    prefix = line0[:col0]
    if has_doc or prefix.strip(" \t\f"):  # replace a docstring, or split `def f(x): return x`
        return _rewrite(node, has_doc, text, lines, src, row0, col0)
    indent = "" if isinstance(node, ast.Module) else _indent_of(prefix)
    at = row0 if isinstance(node, ast.Module) else _below_header(lines, row0, node.lineno - 1)
    new = format_docstring(text, indent, src.encoding)
    return Edit("", at, at, [ln + (_ending(line0) or src.newline) for ln in new], text)


def _rewrite(node, has_doc: bool, text: str, lines: list[str], src: PySource, row0: int, col0: int) -> Edit | str:
    """Lines row0.. rewritten: the old docstring replaced (what shares its last line kept), and/or
    a body that starts on the definition line moved under it."""
    first, line0 = node.body[0], lines[row0]
    prefix = line0[:col0]
    if has_doc:
        end = first.end_lineno
        content = lines[end - 1].rstrip("\r\n")
        tail = content[byte_col_to_char(content, first.end_col_offset):].strip()
        tail = tail if tail.startswith("#") else tail.lstrip(";").strip()
    else:
        end, tail = row0 + 1, line0[col0:].rstrip("\r\n").strip()
    last_ending = _ending(lines[end - 1])
    nl = last_ending or src.newline
    out: list[str] = []
    lead = ""
    if prefix.strip(" \t\f"):  # the header: `def f(x):` keeps its line, the body goes below
        def_line = lines[node.lineno - 1]
        def_indent = def_line[:byte_col_to_char(def_line, node.col_offset)]
        if not prefix.rstrip().endswith(":") or def_indent.strip(" \t\f"):
            return "its body starts on a line docgen cannot split safely"
        def_indent = _indent_of(def_indent)
        indent = def_indent + ("\t" if "\t" in def_indent else "    ")
        out.append(prefix.rstrip() + nl)
    else:
        indent = "" if isinstance(node, ast.Module) else _indent_of(prefix)
        lead = prefix[: len(prefix) - len(indent)]  # a form feed that started the old docstring's line
    new = format_docstring(text, indent, src.encoding)
    new[0] = lead + new[0]
    if tail.startswith("#"):  # a comment after the old docstring stays with it
        new[-1] += "  " + tail
        tail = ""
    out += [ln + nl for ln in new]
    if tail:
        out.append(indent + tail + last_ending)
    else:
        out[-1] = new[-1] + last_ending
    return Edit("", row0, end, out, text)


def apply_edits(source: str, edits: list[Edit], newline: str = "\n") -> str:
    lines = split_lines(source)
    if lines and any(e.start >= len(lines) for e in edits) and not _ending(lines[-1]):
        lines[-1] += newline  # appending after a last line that has no line ending
    # Later edits first, and on one line the replacement before the insertion, so indices hold.
    for e in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        lines[e.start:e.end] = e.new
    return "".join(lines)


def _has_doc(node) -> bool:
    body = node.body
    return bool(body) and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
        and isinstance(body[0].value.value, str)


def plan_edits(src: PySource, tree: ast.Module, docs: dict[str, str], overwrite: bool, rep: DocstringReport,
               path: str) -> list[Edit]:
    """One edit per docstring to write; what cannot be written is in `rep.skipped` with the reason."""
    lines = split_lines(src.text)
    defs = _named_defs(tree)
    edits = []
    for qual, text in docs.items():
        node = defs.get(qual)
        if node is None:
            rep.skipped.append((f"{path}::{qual}", "not found by the Python parser"))
            continue
        has_doc = _has_doc(node)
        if has_doc and not overwrite:
            rep.kept_human += 1
            continue
        edit = _edit(node, has_doc, text, lines, src)
        if isinstance(edit, str):
            rep.skipped.append((f"{path}::{qual}", edit))
            continue
        edit.qual, edit.replaces = qual, has_doc
        edits.append(edit)
    return edits


def check_edits(new: str, expected: str, edits: list[Edit]) -> dict[str, str] | str:
    """Problems of an edited file: a reason for the whole file (it does not parse, or more than
    docstrings changed), else {qualname: reason} for docstrings that did not come out as meant."""
    try:
        tree = ast.parse(new)
    except (SyntaxError, ValueError) as exc:
        return f"the edited file would not parse ({getattr(exc, 'msg', exc)})"
    defs = _named_defs(tree)
    bad = {}
    for e in edits:
        node = defs.get(e.qual)
        if node is None or not _has_doc(node):
            bad[e.qual] = "the docstring did not land on its definition"
        elif normalize_doc(node.body[0].value.value) != normalize_doc(e.text):
            bad[e.qual] = "the docstring would not read back as the generated text"
    if strip_docstrings(tree) != expected:
        return "the edit would change more than docstrings"
    return bad


def edit_file(src: PySource, edits: list[Edit], rep: DocstringReport, path: str) -> str | None:
    """The edited text with every edit that checks out (a bad one drops only itself); None when
    nothing is left to write or even that fails (the reason then in `rep.refused`)."""
    expected = strip_docstrings(ast.parse(src.text))
    new = apply_edits(src.text, edits, src.newline)
    problems = check_edits(new, expected, edits)
    if isinstance(problems, str) or problems:  # find the culprits one by one (the slow, sure way)
        problems = {}
        for e in edits:
            alone = check_edits(apply_edits(src.text, [e], src.newline), expected, [e])
            if alone:
                problems[e.qual] = alone if isinstance(alone, str) else alone[e.qual]
        edits = [e for e in edits if e.qual not in problems]
        new = apply_edits(src.text, edits, src.newline)
        final = check_edits(new, expected, edits)
        if final:
            rep.refused[path] = (final if isinstance(final, str) else "; ".join(final.values())) + "; left unchanged"
            return None
    for qual, why in problems.items():
        rep.skipped.append((f"{path}::{qual}", why + "; this docstring was not written"))
    rep.inserted += sum(1 for e in edits if not e.replaces)
    rep.replaced += sum(1 for e in edits if e.replaces)
    return new if edits else None


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
        try:
            src = read_source(path.read_bytes())
            new = edit_file(src, plan_edits(src, ast.parse(src.text), docs, overwrite, rep, rel), rep, rel)
        except ValueError as exc:
            rep.refused[rel] = f"cannot be rewritten safely: {exc}"
            continue
        except SyntaxError as exc:
            rep.refused[rel] = f"does not parse as Python ({exc.msg}, line {exc.lineno})"
            continue
        except OSError as exc:
            rep.refused[rel] = f"cannot be read ({exc})"
            continue
        if new is None:
            continue
        if mode == "diff":
            diffs.append("".join(difflib.unified_diff(split_lines(src.text), split_lines(new),
                                                      fromfile=f"a/{rel}", tofile=f"b/{rel}")))
        else:
            try:  # atomic, and never through a link (a source swapped for one mid-run, a hard link)
                safe_write.write_text(root if root.is_dir() else file_base(root), rel, new, encoding=src.encoding)
            except (safe_write.UnsafeWrite, OSError) as exc:
                rep.refused[rel] = f"not written: {exc}"
                continue
            rep.written.append(rel)
    rep.diff = "".join(diffs)
    return rep
