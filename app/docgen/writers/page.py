"""The text of one Markdown page (one source file): title, contents, a call graph, then each unit
with its anchor, signature, source link, docs, parts, callers and callees.

Only text is built here; markdown.py decides where pages go and writes them.
"""
from __future__ import annotations

import os

from app.docgen.units import MODULE, SourceUnit
from app.docgen.writers.doctext import escape_inline, render_doc
from app.docgen.writers.pagebits import (CallLinks, anchor, display_signature, has_doc, mermaid_graph, page_name,
                                         source_link, unit_link)

FENCE_LANG = {"cpp": "cpp", "c": "c", "tsx": "tsx"}
NOT_DOCUMENTED = "_Not documented (see the run report)._"


def _doc_lines(unit: SourceUnit, docs: dict) -> list[str]:
    if unit.existing_doc and has_doc(unit.uid, docs):
        return (["**From the source:**", ""] + render_doc(unit.existing_doc, unit.language) + ["", "**Generated:**", ""]
                + render_doc(docs[unit.uid].text, "") + [""])
    if unit.existing_doc:
        return render_doc(unit.existing_doc, unit.language) + [""]
    if has_doc(unit.uid, docs):  # labelled: a reader should know which text a model wrote
        return ["**Generated:**", ""] + render_doc(docs[unit.uid].text, "") + [""]
    return [NOT_DOCUMENTED, ""]


def _flag_lines(messages: list[str] | None) -> list[str]:
    if not messages:
        return []
    return ["> **Flagged by checks:** " + escape_inline("; ".join(messages)), ""]


def _depth(unit: SourceUnit, quals: set[str]) -> int:
    depth, parent = 0, unit.parent
    while parent and parent in quals:
        depth += 1
        parent = parent.rsplit(".", 1)[0] if "." in parent else ""
    return depth


def _contents(units: list[SourceUnit]) -> list[str]:
    quals = {u.qualname for u in units}
    return ["## Contents", ""] + [f"{'  ' * _depth(u, quals)}- [{u.kind} `{u.qualname.replace('`', '')}`](#{anchor(u)})"
                                  for u in units] + [""]


def _parts_lines(unit: SourceUnit, by_uid: dict, docs: dict, flagged: dict) -> list[str]:
    if not unit.parts:
        return []
    out = [f"<details><summary>This {unit.kind} is long: documented in {len(unit.parts)} parts</summary>", ""]
    for uid in unit.parts:
        part = by_uid[uid]
        out += [f"**Lines {part.start_line}\u2013{part.end_line}**", ""]
        out += (render_doc(docs[uid].text, "") if has_doc(uid, docs) else [NOT_DOCUMENTED]) + [""]
        out += _flag_lines(flagged.get(uid))
    return out + ["</details>", ""]


def _link_lines(unit: SourceUnit, links: CallLinks, by_uid: dict) -> list[str]:
    out = []
    for title, uids in (("Calls", links.callees.get(unit.uid)), ("Called by", links.callers.get(unit.uid))):
        if uids:
            out += [f"**{title}:** " + ", ".join(unit_link(by_uid[d], unit.path) for d in uids), ""]
    return out


def render_page(path: str, language: str, units: list[SourceUnit], by_uid: dict, docs: dict,
                flagged: dict, links: CallLinks, root_from_out: str) -> str:
    """`units`: the file's units in source order (module first, parts excluded); `root_from_out`:
    the source root relative to the output folder, for source links."""
    page_dir = os.path.dirname(page_name(path))
    to_root = os.path.relpath(root_from_out, page_dir or ".").replace(os.sep, "/") if page_dir else root_from_out
    module = next(u for u in units if u.qualname == MODULE)
    members = [u for u in units if u.qualname != MODULE]
    lines = [f"# `{path}`", ""]
    if module.existing_doc or has_doc(module.uid, docs):
        lines += _doc_lines(module, docs)
    lines += _flag_lines(flagged.get(module.uid))
    if members:
        lines += _contents(members)
    graph = mermaid_graph(path, members, links, by_uid)
    if graph:
        lines += ["## Call graph", ""] + graph + [""]
    for u in members:
        lines += [f'<a id="{anchor(u)}"></a>', "", f"## {u.kind} `{u.qualname.replace('`', '')}`", "",
                  source_link(u, to_root), "",
                  f"```{FENCE_LANG.get(language, language)}", display_signature(u.signature, u.code), "```", ""]
        lines += _doc_lines(u, docs)
        lines += _flag_lines(flagged.get(u.uid))
        lines += _parts_lines(u, by_uid, docs, flagged)
        lines += _link_lines(u, links, by_uid)
    return "\n".join(lines).rstrip() + "\n"
