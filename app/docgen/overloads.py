"""Merge repeated definitions of one name into one unit.

Overloads (`@typing.overload` stubs and their implementation, Java and C++ overloads, TypeScript
overload signatures), a Python property's getter and setter, and a definition repeated in
`#if`/`#else` branches are one thing to a reader: one unit, one doc. The chunker numbers repeats
(`f`, `f#2`, ...) in source order; this pass folds every `f#k` of the same kind into `f`.
Repeats of different kinds (a TypeScript `interface X` and a `const X`) stay separate.
"""
from __future__ import annotations

from app.docgen.units import SourceUnit


def base_qualname(qualname: str) -> str:
    head, sep, tail = qualname.rpartition("#")
    return head if sep and tail.isdigit() else qualname


def _contiguous(group: list[SourceUnit], lines: list[str]) -> bool:
    """Pieces one after another with only blank or comment lines between them (overload stubs)."""
    for a, b in zip(group, group[1:]):
        if b.start_line <= a.end_line:
            return False
        gap = lines[a.end_line:b.start_line - 1]
        if any(g.strip() and not g.lstrip().startswith(("#", "//", "/*", "*")) for g in gap):
            return False
    return True


def _merge(group: list[SourceUnit], lines: list[str]) -> SourceUnit:
    first = group[0]
    if len(group) == 1:
        return first
    # The implementation (the one with a body and a docstring) decides the doc and the signature:
    # prefer a piece that has an existing doc, then the last piece (Python's implementation follows its stubs).
    main = next((u for u in group if u.existing_doc), group[-1])
    params: list[str] = []
    for u in group:
        params.extend(p for p in u.params if p not in params)  # a doc may describe any overload's parameters
    if _contiguous(group, lines):  # the real text, so line numbers of parts stay true
        first.code = "".join(lines[group[0].start_line - 1:group[-1].end_line])
    else:  # overloads apart from each other: their texts, one after another
        first.code = "\n\n".join(u.code.rstrip("\n") for u in group) + "\n"
    # The cache key stays blind to docstrings (dockey): the pieces' docstring-free forms, joined.
    first.key_code = "\n\n".join(u.stable_code.rstrip("\n") for u in group) + "\n"
    first.start_line = min(u.start_line for u in group)
    first.end_line = max(u.end_line for u in group)
    first.signature = "\n".join(dict.fromkeys(u.signature for u in group))
    first.existing_doc = main.existing_doc
    first.params = params
    first.returns_value = any(u.returns_value for u in group)
    first.yields = any(u.yields for u in group)
    first.raises = sorted({r for u in group for r in u.raises})
    first.exported = any(u.exported for u in group)
    first.calls = list(dict.fromkeys(c for u in group for c in u.calls))
    return first


def merge_repeats(units: list[SourceUnit], text: str) -> list[SourceUnit]:
    """Fold `q#2`, `q#3`, ... into `q` when they have the same kind; order of first appearance kept."""
    lines = text.splitlines(keepends=True)
    groups: dict[tuple[str, str], list[SourceUnit]] = {}
    order: list[tuple[str, str]] = []
    renamed: dict[str, str] = {}  # old qualname -> merged qualname (children's `parent` fields)
    for u in units:
        key = (base_qualname(u.qualname), u.kind)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(u)
    out = []
    for key in order:
        group = groups[key]
        merged = _merge(group, lines)
        for u in group:
            renamed[u.qualname] = merged.qualname
        out.append(merged)
    for u in out:
        u.parent = renamed.get(u.parent, u.parent)
    # A kept repeat of another kind may now be the only one of its name: `X#2` stays addressable.
    return out
