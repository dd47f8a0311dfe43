"""Which units are public API, by each language's rule (what `docgen check` requires docs for).

- Python: no leading underscore in any part of the name; a module with `__all__` exports only those names.
- Go: every part of the name capitalised (a method of an unexported type is not API).
- Rust: `pub` (not `pub(crate)`), inside containers and modules that are themselves public; items
  of `impl Trait for T` are documented on the trait, so they are not required.
- Java: `public`/`protected` (interface members are public), inside a public container.
- C/C++: `static` functions of a source file (not a header) are internal; C++ members follow
  `public:`/`private:` (a class starts private, a struct public); anonymous namespaces are internal.
- JavaScript/TypeScript: `export`ed, assigned to `exports`/`module.exports` (or to an object that
  is), and class members of exported classes that are not `private`/`#private`.
"""
from __future__ import annotations

import re

from app.docgen.nodes import text
from app.docgen.units import SourceUnit

_HEADER = (".h", ".hh", ".hpp", ".hxx")


def _modifiers(node, src: bytes) -> str:
    mods = next((c for c in node.named_children if c.type == "modifiers"), None)
    return text(mods, src) if mods is not None else ""


def _rust_pub(node, src: bytes) -> bool:
    vis = next((c for c in node.named_children if c.type == "visibility_modifier"), None)
    return vis is not None and text(vis, src).replace(" ", "") in ("pub",)


def _ancestors(node):
    cur = node.parent
    while cur is not None:
        yield cur
        cur = cur.parent


def _cpp_access(node, src: bytes) -> bool:
    """Public unless a private/protected section, an anonymous namespace or a source-file static."""
    child = node
    for anc in _ancestors(node):
        if anc.type == "field_declaration_list":
            access = "public" if anc.parent is not None and anc.parent.type == "struct_specifier" else "private"
            for sib in anc.named_children:
                if sib.start_byte >= child.start_byte:
                    break
                if sib.type == "access_specifier":
                    access = text(sib, src).strip()
            if access != "public":
                return False
        if anc.type == "namespace_definition" and anc.child_by_field_name("name") is None:
            return False
        child = anc
    return True


def _js_exported_names(root, src: bytes) -> set[str]:
    """Names a JS/TS module exports by a list (`export { a, b }`, `module.exports = { a, b }`,
    `module.exports = f`) or binds to its exports object (`var app = exports = module.exports = {}`)."""
    names: set[str] = set()
    whole = src.decode("utf-8", "replace")
    for m in re.finditer(r"export\s*\{([^}]*)\}", whole):
        names.update(p.split(" as ")[0].strip() for p in m.group(1).split(",") if p.strip())
    for m in re.finditer(r"module\.exports\s*=\s*\{([^}]*)\}", whole):
        names.update(re.findall(r"(?:^|,)\s*([A-Za-z_$][\w$]*)", m.group(1)))
    for m in re.finditer(r"(?:module\.)?exports\s*=\s*([A-Za-z_$][\w$]*)\s*;?\s*$", whole, re.M):
        names.add(m.group(1))
    for m in re.finditer(r"(?:var|let|const)\s+([A-Za-z_$][\w$]*)\s*=\s*(?:exports\s*=\s*)?module\.exports\b", whole):
        names.add(m.group(1))
    for m in re.finditer(r"(?:var|let|const)\s+([A-Za-z_$][\w$]*)\s*=\s*exports\b", whole):
        names.add(m.group(1))
    return names


def python_all(root, src: bytes) -> set[str] | None:
    for stmt in root.named_children:
        if stmt.type == "expression_statement" and stmt.named_children:
            expr = stmt.named_children[0]
            if expr.type in ("assignment", "augmented_assignment") and text(expr.child_by_field_name("left"), src) == "__all__":
                return set(re.findall(r"[\"']([\w.]+)[\"']", text(expr.child_by_field_name("right"), src)))
    return None


def _one(unit: SourceUnit, outer, src: bytes, ctx: dict) -> bool:
    lang, parts = unit.language, unit.qualname.split(".")
    if lang == "python":
        top = ctx.get("all")
        return top is None or parts[0] in top
    if lang == "go":
        return all(p[:1].isupper() for p in parts)
    inner = outer
    if outer.type in ("export_statement", "decorated_definition", "template_declaration", "ambient_declaration"):
        inner = next((c for c in outer.named_children if c.type not in ("comment", "decorator")), outer)
    if lang == "rust":
        if unit.kind == "impl":
            return False  # rustdoc documents the type and its items, not the impl block
        for anc in _ancestors(outer):
            if anc.type == "impl_item" and anc.child_by_field_name("trait") is not None:
                return False  # documented on the trait
            if anc.type in ("mod_item", "trait_item") and not _rust_pub(anc, src):
                return False
        if any(a.type == "trait_item" for a in _ancestors(outer)):
            return True  # trait items are as public as their trait
        return _rust_pub(inner, src)
    if lang == "java":
        for node in [inner] + [a for a in _ancestors(inner) if a.type.endswith("_declaration")]:
            parent_body = node.parent
            in_interface = parent_body is not None and parent_body.type in ("interface_body", "annotation_type_body")
            mods = _modifiers(node, src)
            if not (in_interface or re.search(r"\b(public|protected)\b", mods)) or re.search(r"\bprivate\b", mods):
                return False
        return True
    if lang in ("c", "cpp"):
        if not unit.path.lower().endswith(_HEADER) and not unit.parent and re.match(r"\s*(static|inline\s+static)\b",
                                                                                     text(inner, src)):
            return False
        return lang == "c" or _cpp_access(inner, src)
    # JavaScript / TypeScript
    if outer.type != "export_statement" and unit.parent == "" and any(a.type == "internal_module"
                                                                      for a in _ancestors(outer)):
        return False  # a namespace member without `export` is private to the namespace
    if outer.type == "export_statement" or any(a.type == "export_statement" for a in _ancestors(outer)):
        head = text(inner, src).lstrip()
        return not head.startswith(("private ", "protected ", "#")) and "." not in parts[-1][:1]
    if outer.type == "expression_statement":  # app.init = function ...
        target = unit.qualname.split(".")[0]
        return "." not in unit.qualname or target in ctx["js_names"]
    head = text(inner, src).lstrip()
    if unit.parent and head.startswith(("private ", "protected ", "#")):
        return False
    return parts[0] in ctx["js_names"]


def mark_exported(units: list[SourceUnit], nodes: list, root, src: bytes, language: str) -> None:
    """Set `unit.exported` for units chunked from one file (`nodes`: (outer, body) per unit)."""
    ctx: dict = {}
    if language == "python":
        ctx["all"] = python_all(root, src)
    elif language in ("javascript", "typescript", "tsx"):
        ctx["js_names"] = _js_exported_names(root, src)
    by_qual = {u.qualname: u for u in units}
    for unit, (outer, _body) in zip(units, nodes):
        unit.exported = _one(unit, outer, src, ctx)
    for unit in units:  # a member of a non-exported container is not API either
        parent = by_qual.get(unit.parent)
        while parent is not None and unit.exported:
            if parent.kind != "impl":  # a Rust impl block has no visibility of its own
                unit.exported = parent.exported
            parent = by_qual.get(parent.parent)
