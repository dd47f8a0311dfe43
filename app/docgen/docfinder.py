"""Documentation already in the source, found by each language's convention.

- Python: the first statement of a body when it is a string (a module's may follow comments,
  a shebang or a coding line).
- Comment languages: the comments right above a definition (attributes such as Rust's
  `#[derive]` may sit between them); a `/** ... */` doc comment (JSDoc, Javadoc) may be
  separated from its definition by blank lines, as express writes them.
- Module docs: Rust `//!`, Go's comment above `package`, otherwise the first comment block
  that is not attached to a definition. Licence headers are never documentation.
"""
from __future__ import annotations

import re

from app.docgen.langspec import Spec
from app.docgen.nodes import _python_docstring, clean_comment, text

_LICENCE = re.compile(r"copyright\s|\(c\)\s*\d{4}|spdx-license-identifier|licensed under|permission is hereby granted"
                      r"|all rights reserved|\bmit licen[cs]ed\b|general public licen[cs]e|redistribution and use"
                      r"|provided (by the copyright holders )?.?as is|governed by a \S+ licen[cs]e|without warranty"
                      r"|https?://\S*licen[cs]es?\b|you may not use this file|limitations under the licen[cs]e",
                      re.I)
_BANNER = re.compile(r"\s*(/{4,}|/\*{3,}|#{4,}|//\s*[-=*#/]{4,})")
_ATTRIBUTES = {"attribute_item", "decorator", "annotation", "marker_annotation"}


def is_licence(doc: str) -> bool:
    return bool(_LICENCE.search(doc))


def without_licence(doc: str) -> str:
    """The doc with its licence paragraphs removed (a header often starts with a one-line title,
    or ends with a description, around the licence)."""
    paragraphs = re.split(r"\n\s*\n", doc)
    return "\n\n".join(p for p in paragraphs if p.strip() and not is_licence(p)).strip()


def end_row(node) -> int:
    """Last row a node occupies: Rust line comments end at column 0 of the next row."""
    end = node.end_point
    return end.row - 1 if end.column == 0 and end.row > node.start_point.row else end.row


def _is_doc_block(raw: str) -> bool:
    return raw.lstrip().startswith(("/**", "///")) and not raw.lstrip().startswith("/***")


def existing_doc(outer, inner, spec: Spec, src: bytes, language: str) -> str:
    if language == "python":
        return without_licence(_python_docstring(inner.child_by_field_name("body"), src))
    comments = []
    cur, row = outer.prev_named_sibling, outer.start_point.row
    while cur is not None and (cur.type in spec.comments or cur.type in _ATTRIBUTES):
        raw = text(cur, src)
        if cur.type in spec.comments and _BANNER.match(raw):
            break  # a section banner (`////// Checks //////`), not this definition's doc
        gap = end_row(cur) < row - 1  # blank lines between this node and what follows it
        if gap and not (not comments and cur.type in spec.comments and _is_doc_block(raw)):
            break  # only a doc comment directly above may stand apart from its definition
        before = cur.prev_named_sibling
        if cur.type in spec.comments:
            if before is not None and end_row(before) == cur.start_point.row and before.type not in spec.comments:
                break  # a trailing comment of the previous line's code
            if comments and gap:
                break
            comments.append(raw)
            if gap:
                break  # a separated doc comment stands alone
        row = cur.start_point.row
        cur = before
    return without_licence(clean_comment("\n".join(reversed(comments))))


def _comment_blocks(root, spec: Spec, src: bytes) -> tuple[list[list], object]:
    """Leading comment blocks (split at blank lines) and the first node after them."""
    blocks: list[list] = []
    following = None
    for k in root.named_children:
        if k.type not in spec.comments:
            following = k
            break
        if blocks and k.start_point.row <= end_row(blocks[-1][-1]) + 1:
            blocks[-1].append(k)
        else:
            blocks.append([k])
    return blocks, following


def module_doc(root, spec: Spec, src: bytes, language: str) -> str:
    if language == "python":
        kids = [k for k in root.named_children if k.type != "comment"]  # shebang, coding line, licence comments
        first = kids[0] if kids else None
        if first is None or first.type != "expression_statement":
            return ""
        doc = _python_docstring(root, src) if first is root.named_children[0] else _docstring_of(first, src)
        return without_licence(doc)
    if language == "rust":  # inner doc comments: //! and /*! anywhere before the first item
        inner = [text(k, src) for k in root.named_children if k.type in spec.comments
                 and text(k, src).startswith(("//!", "/*!"))]
        if inner:
            return clean_comment("\n".join(inner))
    blocks, following = _comment_blocks(root, spec, src)
    if language == "go":  # the package doc is the comment directly above `package`
        blocks = blocks[-1:] if blocks and following is not None and following.type == "package_clause" and \
            following.start_point.row <= end_row(blocks[-1][-1]) + 1 else []
    elif language in ("javascript", "typescript", "tsx", "java"):  # a file overview is a /** doc comment
        blocks = [b for b in blocks if _is_doc_block(text(b[0], src))]
    for block in blocks:
        if _BANNER.match(text(block[0], src)):
            continue
        doc = without_licence(clean_comment("\n".join(text(b, src) for b in block)))
        if not doc:
            continue
        attached = following is not None and block is blocks[-1] and following.start_point.row <= end_row(block[-1]) + 1
        if attached and not (language == "go" and following.type == "package_clause"):
            return ""  # the comment belongs to the first definition
        return doc
    return ""


def _docstring_of(stmt, src: bytes) -> str:
    """A module docstring that follows leading comments: parse it as `_python_docstring` does."""
    class _Block:  # the helper reads `named_children` of a block; give it the statement alone
        named_children = [stmt]
    return _python_docstring(_Block, src)
