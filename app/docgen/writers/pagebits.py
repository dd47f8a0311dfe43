"""The parts of a page around the doc text: anchors, contents, signatures with their decorators on
their own lines, source links, callers/callees cross-links, a Mermaid call graph, counts.

Pure functions of the plan and the results; markdown.py assembles them and writes the files.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from app.docgen.units import CALLABLE_KINDS, MODULE, SourceUnit

MAX_GRAPH_EDGES = 60  # a bigger Mermaid graph is unreadable (and GitHub refuses very large ones)


def page_name(rel: str) -> str:
    return rel + ".md"


def anchor(unit: SourceUnit) -> str:
    """A stable id for a unit's heading: its qualified name, with anything but [A-Za-z0-9_-] as `-`."""
    return "u-" + re.sub(r"[^A-Za-z0-9_-]+", "-", unit.qualname).strip("-")  # case kept: ids are case-sensitive


def unit_link(unit: SourceUnit, from_path: str) -> str:
    """A Markdown link to a unit's heading, relative to the page of `from_path`."""
    label = unit.qualname if unit.path == from_path else f"{unit.path}: {unit.qualname}"
    if unit.path == from_path:
        target = f"#{anchor(unit)}"
    else:
        rel = os.path.relpath(page_name(unit.path), os.path.dirname(page_name(from_path)) or ".")
        target = f"{rel.replace(os.sep, '/')}#{anchor(unit)}"
    return f"[`{label.replace('`', '')}`]({target.replace(' ', '%20').replace('(', '%28').replace(')', '%29')})"


def source_link(unit: SourceUnit, page_dir_to_root: str) -> str:
    """`path` lines a-b, linking to the source file (GitHub's #La-Lb selects the lines)."""
    target = f"{page_dir_to_root}/{unit.path}".replace(" ", "%20")
    return f"[`{unit.path}` lines {unit.start_line}\u2013{unit.end_line}]({target}#L{unit.start_line}-L{unit.end_line})"


LONG_SIGNATURE = 100  # characters; a longer (or cut) one-line signature is shown as written in the source


def _declaration_lines(code: str) -> list[str] | None:
    """The declaration as laid out in the source: from its first line (after decorators, attributes
    and comments) to where its parameter list closes and the body starts."""
    lines = code.splitlines()
    i, depth = 0, 0
    while i < len(lines) and (lines[i].lstrip().startswith(("@", "#[", "//", "/*", "*", "#")) or depth > 0
                              or not lines[i].strip()):
        depth += lines[i].count("(") - lines[i].count(")")  # a decorator's arguments over several lines
        i += 1
    out: list[str] = []
    depth = 0
    for line in lines[i:i + 40]:
        out.append(line.rstrip())
        depth += line.count("(") + line.count("[") - line.count(")") - line.count("]")
        end = line.rstrip()
        if depth <= 0 and (end.endswith((":", "{", ";", "=>")) or "{" in end):
            out[-1] = end.rstrip(":{ ").rstrip() if end.endswith((":", "{")) else end
            return out if len(out) > 1 else None
    return None


def display_signature(signature: str, code: str) -> str:
    """One line per decorator/attribute/annotation and per glued comment, then the declaration
    (the chunker collapses a signature's whitespace, which glues `@decorator def f`). A long
    single declaration is shown as laid out in the source."""
    out: list[str] = []
    for sig in signature.split("\n"):
        rest = sig.strip()
        while rest:
            if rest[0] == "@" or rest.startswith("#["):
                end = _attribute_end(rest)
                out.append(rest[:end])
                rest = rest[end:].lstrip()
            elif rest.startswith("//"):
                end = _comment_end(rest, code)
                out.append(rest[:end].rstrip())
                rest = rest[end:].lstrip()
            else:
                long = len(rest) > LONG_SIGNATURE or rest.endswith("...")
                laid_out = _declaration_lines(code) if long and "\n" not in signature else None
                out.extend(laid_out or [rest])
                break
    return "\n".join(out)


def _attribute_end(text: str) -> int:
    """End of a leading `@name(args)`, `@name` or `#[...]`."""
    i = 2 if text.startswith("#[") else 1
    if text.startswith("#["):
        depth = 1
    else:
        while i < len(text) and (text[i].isalnum() or text[i] in "_.$"):
            i += 1
        if i >= len(text) or text[i] != "(":
            return i
        depth, i = 1, i + 1
    opening, closing = ("[", "]") if text.startswith("#[") else ("(", ")")
    while i < len(text) and depth:
        depth += {opening: 1, closing: -1}.get(text[i], 0)
        i += 1
    return i


def _comment_end(text: str, code: str) -> int:
    """A `// comment` glued into a signature ends where that comment's line ends in the code."""
    for line in code.splitlines():
        pos = line.find("//")
        if pos >= 0:
            comment = line[pos:].rstrip()
            if text.startswith(comment):
                return len(comment)
    return len(text)


@dataclass
class CallLinks:
    callees: dict[str, list[str]]  # uid -> uids it calls (resolved in the call graph)
    callers: dict[str, list[str]]


def call_links(units: list[SourceUnit], deps: dict[str, set[str]]) -> CallLinks:
    """Calls only: a container's members, a module's units and a unit's parts are edges of the
    dependency graph too, but not calls."""
    by_uid = {u.uid: u for u in units}
    callees: dict[str, list[str]] = {}
    callers: dict[str, list[str]] = {}
    for u in units:
        if u.kind not in CALLABLE_KINDS:
            continue
        out = sorted(d for d in deps.get(u.uid, ()) if d in by_uid and d not in u.parts
                     and by_uid[d].kind != "part" and by_uid[d].qualname != MODULE)
        callees[u.uid] = out
        for d in out:
            callers.setdefault(d, []).append(u.uid)
    return CallLinks(callees, callers)


def mermaid_graph(path: str, units: list[SourceUnit], links: CallLinks, by_uid: dict[str, SourceUnit]) -> list[str]:
    """A flowchart of the calls made from this file's units (callees in other files labelled with
    their path). Empty when the file's units call nothing that was resolved."""
    edges = [(u.uid, d) for u in units for d in links.callees.get(u.uid, ())]
    if not edges:
        return []
    ids: dict[str, str] = {}
    nodes: list[str] = []

    def node(uid: str) -> str:
        if uid not in ids:
            ids[uid] = f"n{len(ids)}"
            unit = by_uid[uid]
            label = unit.qualname if unit.path == path else f"{unit.path}: {unit.qualname}"
            nodes.append(f'    {ids[uid]}["{_mermaid_label(label)}"]')
        return ids[uid]

    lines = [f"    {node(a)} --> {node(b)}" for a, b in edges[:MAX_GRAPH_EDGES]]
    out = ["```mermaid", "flowchart LR"] + nodes + lines + ["```"]
    if len(edges) > MAX_GRAPH_EDGES:
        out.append(f"_The graph shows {MAX_GRAPH_EDGES} of {len(edges)} calls._")
    return out


def _mermaid_label(text: str) -> str:
    return "".join(f"#{ord(c)};" if c in '"<>#&`' else c for c in text)


@dataclass
class PageCounts:
    units: int  # units on the page, parts included
    documented: int  # with a non-empty doc
    flagged: int  # documented units the checks flagged (never more than documented)


def page_counts(units: list[SourceUnit], docs: dict, flagged: dict) -> PageCounts:
    documented = [u for u in units if u.uid in docs and (docs[u.uid].text or "").strip()]
    return PageCounts(len(units), len(documented), sum(1 for u in documented if u.uid in flagged))


def has_doc(uid: str, docs: dict) -> bool:
    return uid in docs and bool((docs[uid].text or "").strip())
