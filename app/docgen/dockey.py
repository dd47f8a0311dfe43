"""The code a unit's cache key is computed from: its code without documentation.

`docgen run --write` inserts docstrings; if the key hashed them, the next run would regenerate
every unit whose code now holds docgen's own output (and every container and module around it).
So the key form of a unit is its code (or skeleton) with:
  - Python: every docstring statement of the module, classes and functions removed, and a body
    that is one line once its docstring is gone written on the definition line
    (`def f(x):\\n    \"\"\"doc\"\"\"\\n    return x` and `def f(x): return x` have one key form:
    --write splits one-line definitions to insert their docstring);
  - comment-doc languages: the doc comments attached to definitions (as `existing_doc` reads
    them) and the file's header comment removed.
Everything else (code, other comments, layout) is kept, so any other edit still changes the key.
The cost: editing only a docstring or doc comment does not regenerate (use --no-resume).
"""
from __future__ import annotations

from app.docgen.langspec import Spec

Edit = tuple[int, int, bytes]  # byte range of the file and its replacement
_PY_SCOPES = ("function_definition", "class_definition")
# A body can sit on its definition line only if it is simple statements (what --write splits).
_PY_COMPOUND = frozenset({"function_definition", "class_definition", "decorated_definition", "if_statement",
                          "for_statement", "while_statement", "try_statement", "with_statement", "match_statement"})


def _line_span(node, src: bytes) -> tuple[int, int]:
    """The node's bytes, widened to whole lines when nothing but blanks (or a comment after it)
    shares them, so removing it leaves no empty line behind."""
    start = src.rfind(b"\n", 0, node.start_byte) + 1
    nl = src.find(b"\n", node.end_byte)
    end = len(src) if nl < 0 else nl + 1
    before, after = src[start:node.start_byte], src[node.end_byte:end].strip()
    if before.strip(b" \t\f") or (after and not after.startswith((b"#", b"//", b"/*"))):
        return node.start_byte, node.end_byte
    return start, end


def _is_docstring(stmt) -> bool:
    return stmt.type == "expression_statement" and stmt.named_child_count == 1 \
        and stmt.named_children[0].type in ("string", "concatenated_string")


def _colon(scope, block):
    return next((c for c in reversed(scope.children) if c.type == ":" and c.end_byte <= block.start_byte), None)


def _python_edits(root, src: bytes) -> list[Edit]:
    edits: list[Edit] = []
    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(node.named_children)
        block = node if node.type == "module" else node.child_by_field_name("body") if node.type in _PY_SCOPES else None
        if block is None:
            continue
        stmts = [c for c in block.named_children if c.type != "comment"]
        doc = stmts[0] if stmts and _is_docstring(stmts[0]) else None
        rest = stmts[1:] if doc else stmts
        colon = _colon(node, block) if node is not root else None
        first = rest[0].start_byte if rest else 0
        comments = colon is not None and any(c.type == "comment" and colon.end_byte <= c.start_byte < first
                                             for c in list(node.children) + list(block.named_children))
        one_line = bool(rest) and rest[0].start_point.row == rest[-1].end_point.row \
            and not any(r.type in _PY_COMPOUND for r in rest)
        if colon and one_line and not comments:
            edits.append((colon.end_byte, rest[0].start_byte, b" "))  # a one-line body: on the definition line
        elif doc is not None:
            start, end = _line_span(doc, src)
            tail = src[doc.end_byte:end].lstrip(b" \t")
            if start == doc.start_byte and tail.startswith(b";"):  # `"""doc"""; x = 1`
                end = doc.end_byte + (len(src[doc.end_byte:end]) - len(tail)) + 1
            edits.append((start, end, b""))
    return edits


def _comment_edits(defs, root, spec: Spec, src: bytes) -> list[Edit]:
    """Doc comments above each definition (the blocks `nodes.existing_doc` reads) and the header."""
    edits: list[Edit] = []
    for outer in defs:
        cur, row = outer.prev_named_sibling, outer.start_point.row
        while cur is not None and (cur.type in spec.comments or cur.type == "attribute_item"):
            if cur.end_point.row < row - 1:
                break
            before = cur.prev_named_sibling
            if cur.type in spec.comments:
                if before is not None and before.end_point.row == cur.start_point.row:
                    break
                edits.append((*_line_span(cur, src), b""))
            row, cur = cur.start_point.row, before
    kids = root.named_children
    header = []
    for k in kids:  # the file's leading comment block, as `nodes.module_doc` reads it
        if k.type not in spec.comments or (header and k.start_point.row > header[-1].end_point.row + 1):
            break
        header.append(k)
    if header and header[0].start_point.row == 0:
        edits.extend((*_line_span(k, src), b"") for k in header)
    return edits


class KeyForms:
    """Key forms of the units of one parsed file (see the module docstring)."""

    def __init__(self, root, spec: Spec, src: bytes, language: str, units_nodes: list) -> None:
        self.src, self.language = src, language
        defs = [outer for outer, _ in units_nodes]
        self.docs = _python_edits(root, src) if language == "python" else _comment_edits(defs, root, spec, src)
        self.elisions: list[Edit] = []  # callable bodies, as skeletons show them
        for _, body in units_nodes:
            if body is None:
                continue
            colon = _colon(body.parent, body) if language == "python" and body.parent is not None else None
            if colon is not None:  # one form for one-liners too; leading body comments go with the body
                self.elisions.append((colon.end_byte, body.end_byte, b" ..."))
            else:
                self.elisions.append((body.start_byte, body.end_byte, b"..." if language == "python" else b"{ ... }"))

    def text(self, start: int, end: int, skeleton: bool) -> str:
        """Key form of src[start:end]; `skeleton`: callable bodies inside are elided (containers, modules)."""
        edits = self.docs + (self.elisions if skeleton else [])
        inside = sorted((e for e in edits if start <= e[0] and e[1] <= end and (e[0], e[1]) != (start, end)),
                        key=lambda e: (e[0], -e[1]))
        out, pos = [], start
        for s, e, rep in inside:
            if s < pos:
                continue  # nested inside a range already replaced
            out += [self.src[pos:s], rep]
            pos = e
        out.append(self.src[pos:end])
        return b"".join(out).decode("utf-8", "replace")
