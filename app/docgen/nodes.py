"""Small helpers over tree-sitter nodes: names, parameters, returns, throws, calls, comments.

All positions are byte offsets into the UTF-8 source, as tree-sitter gives them.
"""
from __future__ import annotations

import ast
import inspect
import re
import textwrap

from app.docgen.langspec import FUNCTION_LIKE, NO_VALUE_TYPES, Spec

_IDENT_TYPES = {"identifier", "field_identifier", "type_identifier", "property_identifier",
                "qualified_identifier", "destructor_name", "operator_name", "self", "this"}
_LAST_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def text(node, src: bytes) -> str:
    return src[node.start_byte:node.end_byte].decode("utf-8", "replace") if node is not None else ""


def c_declarator_name(node):
    """C/C++: follow `declarator` fields (pointer, reference, function declarators) to the name."""
    cur = node.child_by_field_name("declarator")
    while cur is not None:
        if cur.type in _IDENT_TYPES:
            return cur
        nxt = cur.child_by_field_name("declarator")
        if nxt is None:
            nxt = next((c for c in cur.named_children if c.type in _IDENT_TYPES or "declarator" in c.type), None)
        cur = nxt
    return None


def go_receiver_type(node, src: bytes) -> str:
    recv = node.child_by_field_name("receiver")
    decl = next((c for c in recv.named_children if c.type == "parameter_declaration"), None) if recv else None
    raw = text(decl.child_by_field_name("type"), src) if decl else ""
    return raw.lstrip("*").split("[")[0].strip()


def params_node(fn, language: str):
    if language in ("c", "cpp"):
        cur = fn.child_by_field_name("declarator")
        while cur is not None and cur.type != "function_declarator":
            cur = cur.child_by_field_name("declarator")
        return cur.child_by_field_name("parameters") if cur is not None else None
    return fn.child_by_field_name("parameters") or fn.child_by_field_name("parameter")


def _param_name(node, src: bytes) -> list[str]:
    if node.type in _IDENT_TYPES:
        return [text(node, src)]
    if node.type == "self_parameter":
        return ["self"]
    if node.type == "spread_parameter":  # Java varargs `T... name`: the name is in the declarator, not the type
        decl = next((c for c in node.named_children if c.type == "variable_declarator"), None)
        if decl is not None:
            return _param_name(decl, src)
    names = node.children_by_field_name("name")
    if names:
        return [text(n, src) for n in names]
    for fld in ("pattern", "declarator", "left"):
        sub = node.child_by_field_name(fld)
        if sub is not None:
            return _param_name(sub, src)
    for child in node.named_children:
        if child.type in _IDENT_TYPES or child.type.endswith(("pattern", "declarator")):
            return _param_name(child, src)
    return []


def param_names(params, src: bytes, language: str) -> list[str]:
    if params is None:
        return []
    if params.type in _IDENT_TYPES:  # JS arrow function with one bare parameter
        return [text(params, src)]
    out: list[str] = []
    for child in params.named_children:
        if "comment" in child.type or child.type in ("keyword_separator", "positional_separator"):
            continue
        out.extend(n for n in _param_name(child, src) if n)
    return out


def _walk_own(node, skip_types=frozenset(), skip_ranges=()):
    """Descendants of `node`, not entering nested nodes of `skip_types` or byte `skip_ranges`."""
    stack = list(reversed(node.named_children))
    while stack:
        cur = stack.pop()
        if cur.type in skip_types or any(s <= cur.start_byte and cur.end_byte <= e for s, e in skip_ranges):
            continue
        yield cur
        stack.extend(reversed(cur.named_children))


def returns_info(fn, spec: Spec, src: bytes) -> tuple[bool, bool]:
    """(returns a value, yields) for a function node, from its body and declared return type."""
    returns = yields = False
    body = fn.child_by_field_name("body")
    if body is not None:
        if body.type not in ("block", "statement_block", "compound_statement", "constructor_body"):
            returns = True  # an expression-bodied arrow function
        for n in _walk_own(body, FUNCTION_LIKE):
            if n.type in spec.returns and any("comment" not in c.type for c in n.named_children):
                returns = True
            elif n.type in ("yield", "yield_expression"):
                yields = True
    declared = text(fn.child_by_field_name(spec.return_type_field), src) if spec.return_type_field else ""
    declared = declared.lstrip(":").strip()
    if fn.type == "constructor_declaration" or (fn.type == "method_definition" and
                                                 text(fn.child_by_field_name("name"), src) == "constructor"):
        declared = ""
    if declared and declared not in NO_VALUE_TYPES and not yields:
        returns = True
    return returns, yields


def raised_names(fn, spec: Spec, src: bytes) -> list[str]:
    names: list[str] = []
    body = fn.child_by_field_name("body")
    nodes = list(_walk_own(body, FUNCTION_LIKE)) if body is not None else []
    for n in nodes:
        if n.type in spec.throws:
            raw = text(n, src)
            m = re.match(r"\s*(?:raise|throw)\s+(?:new\s+)?([A-Za-z_][\w.]*)", raw)
            if m:
                names.append(m.group(1).split(".")[-1])
    for c in fn.named_children:  # Java: `throws IOException, Foo`
        if c.type == "throws":
            names.extend(_LAST_IDENT.findall(text(c, src))[1:])
    return sorted(set(names))


def _callee(node, spec: Spec, src: bytes) -> str:
    fld = spec.calls[node.type]
    target = node.child_by_field_name(fld)
    raw = text(target, src)
    if node.type == "method_invocation":
        obj = text(node.child_by_field_name("object"), src)
        raw = f"{obj}.{raw}" if obj else raw
    raw = re.sub(r"<[^<>]*>", "", raw).replace("::", ".").replace("->", ".").replace(" ", "")
    if not re.fullmatch(r"[\w.]+", raw):
        idents = _LAST_IDENT.findall(raw)
        raw = "." + idents[-1] if idents else ""
    return raw


def call_names(node, spec: Spec, src: bytes, skip=()) -> list[str]:
    seen: dict[str, None] = {}
    for n in _walk_own(node, skip_ranges=skip):
        if n.type in spec.calls:
            name = _callee(n, spec, src)
            if name:
                seen[name] = None
    return list(seen)


def _header_end(body) -> int:
    """Where a definition's header ends: at Python's `:` (a comment after it, or a docstring
    --write put before that comment, is body), else where the body starts."""
    colon = next((c for c in reversed(body.parent.children) if c.type == ":" and c.end_byte <= body.start_byte),
                 None) if body.parent is not None else None
    return colon.end_byte if colon is not None else body.start_byte


def signature(outer, body, src: bytes) -> str:
    if body is None:  # a container (or Go type spec): its header up to its own body
        inner_body = outer.child_by_field_name("body")
        end = _header_end(inner_body) if inner_body is not None else outer.end_byte
        raw = src[outer.start_byte:end].decode("utf-8", "replace").split("{")[0]
    else:
        raw = src[outer.start_byte:_header_end(body)].decode("utf-8", "replace")
    raw = " ".join(raw.split()).rstrip("{").rstrip(":").strip()
    return raw if len(raw) <= 300 else raw[:297] + "..."


def clean_comment(raw: str) -> str:
    lines = []
    for line in raw.splitlines():
        s = line.strip()
        for prefix in ("/**", "/*!", "/*", "///", "//!", "//", "#"):
            if s.startswith(prefix):
                s = s[len(prefix):]
                break
        if s.endswith("*/"):
            s = s[:-2]
        s = s.rstrip()
        if s.lstrip().startswith("*"):
            s = s.lstrip()[1:]
        lines.append(s)
    # Indentation past the comment markers is kept (relative to the least indented line): it marks
    # code examples in JSDoc, Go and Rust doc comments.
    return textwrap.dedent("\n".join(lines)).strip()


def _python_docstring(block, src: bytes) -> str:
    if block is None or not block.named_children:
        return ""
    first = block.named_children[0]
    if first.type == "expression_statement" and first.named_children and first.named_children[0].type == "string":
        raw = text(first.named_children[0], src)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw.strip("\"'")
        return inspect.cleandoc(value) if isinstance(value, str) else ""
    return ""


def elide(src: bytes, start: int, end: int, bodies: list[tuple[int, int]], language: str) -> str:
    """Source between start and end with every callable body inside it replaced by a placeholder."""
    inside = sorted((s, e) for s, e in bodies if start <= s and e <= end and (s, e) != (start, end))
    out, pos = [], start
    for s, e in inside:
        if s < pos:
            continue  # nested inside a body already elided
        out.append(src[pos:s].decode("utf-8", "replace"))
        out.append("..." if language == "python" else "{ ... }")
        pos = e
    out.append(src[pos:end].decode("utf-8", "replace"))
    return "".join(out)
