"""Cut a source file into documentable units with tree-sitter.

One shared walk, driven by the per-language tables in `langspec`: functions, methods,
classes/structs/impls/interfaces, and one module unit per file. Class and module units carry a
skeleton (member bodies elided) so they stay short and do not change when a body changes.
Parse errors do not stop chunking: tree-sitter recovers, and the file is flagged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from app.docgen import nodes as N
from app.docgen.dockey import KeyForms
from app.docgen.languages import get_parser
from app.docgen.langspec import SPECS, Spec
from app.docgen.units import MODULE, SourceUnit


@dataclass
class FileChunks:
    path: str
    language: str
    units: list[SourceUnit] = field(default_factory=list)
    parse_errors: bool = False


class _Chunker:
    def __init__(self, rel: str, language: str, source: bytes) -> None:
        self.rel, self.language, self.src = rel, language, source
        self.spec: Spec = SPECS[language]
        self.units: list[SourceUnit] = []
        self.unit_nodes: list = []  # (outer node, body node or None) per unit, parallel to units
        self.seen: dict[str, int] = {}

    # ---- the walk -------------------------------------------------------------------------
    def visit_children(self, node, parent_qual: str, method_prefix: str) -> None:
        for child in node.named_children:
            self.visit(child, child, parent_qual, method_prefix)

    def visit(self, node, outer, parent_qual: str, method_prefix: str) -> None:
        spec, t = self.spec, node.type
        if t in spec.wrappers:
            inner = node.child_by_field_name("definition") or node.child_by_field_name("declaration")
            if inner is None:
                inner = next((c for c in node.named_children
                              if c.type in spec.functions or c.type in spec.containers), None)
            if inner is not None:
                self.visit(inner, outer, parent_qual, method_prefix)
            return
        if t in spec.functions:
            self.add_function(node, outer, parent_qual, method_prefix)
        elif t in spec.containers:
            self.add_container(node, outer, spec.containers[t], parent_qual, method_prefix)
        elif t == "lexical_declaration" or t == "variable_declaration":
            self.add_js_arrow(node, outer, parent_qual, method_prefix)
        elif t == "type_declaration" and self.language == "go":
            for spec_node in (c for c in node.named_children if c.type == "type_spec"):
                self.add_go_type(spec_node, node if node.named_child_count == 1 else spec_node)
        elif t in spec.type_holders:
            inner = node.child_by_field_name("type")
            if inner is not None and inner.type in spec.containers and inner.child_by_field_name("body"):
                fallback = N.text(node.child_by_field_name("declarator"), self.src) if t == "type_definition" else ""
                self.add_container(inner, node, spec.containers[inner.type], parent_qual, method_prefix, fallback)
        elif t in spec.scopes:
            body = node.child_by_field_name("body") or node
            name = N.text(node.child_by_field_name("name"), self.src)
            prefix = f"{method_prefix}.{name}" if method_prefix and name else (name or method_prefix)
            self.visit_children(body, parent_qual, prefix)
        elif t in ("class_body", "declaration_list", "field_declaration_list", "enum_body", "block"):
            self.visit_children(node, parent_qual, method_prefix)

    # ---- unit builders --------------------------------------------------------------------
    def add_function(self, node, outer, parent_qual: str, method_prefix: str, name: str = "") -> None:
        src, lang = self.src, self.language
        kind = "method" if parent_qual else self.spec.functions.get(node.type, "function")
        if not name:
            name_node = node.child_by_field_name("name") or N.c_declarator_name(node)
            name = N.text(name_node, src)
        if not name:
            return
        receiver = ""
        if lang == "go" and node.type == "method_declaration":
            receiver = N.go_receiver_type(node, src)
        name = name.replace("::", ".")
        if "." in name and lang == "cpp":  # out-of-class definition: int Foo::bar() { ... }
            receiver, name = name.rsplit(".", 1)
            kind = "method"
        prefix = receiver or method_prefix
        qual = f"{prefix}.{name}" if prefix else name
        fn = node.child_by_field_name("value") if node.type == "variable_declarator" else node
        body = fn.child_by_field_name("body")
        unit = self.make_unit(outer, name, qual, kind, body, parent=parent_qual or receiver)
        params_node = N.params_node(fn, lang)
        unit.params = N.param_names(params_node, src, lang)
        unit.returns_value, unit.yields = N.returns_info(fn, self.spec, src)
        unit.raises = N.raised_names(fn, self.spec, src)

    def add_container(self, node, outer, kind: str, parent_qual: str, method_prefix: str, fallback: str = "") -> None:
        src = self.src
        name = N.text(node.child_by_field_name("name"), src) or fallback
        body = node.child_by_field_name("body")
        member_prefix = f"{method_prefix}.{name}" if method_prefix else name
        if node.type == "impl_item":  # Rust: impl Type / impl Trait for Type
            type_name = N.text(node.child_by_field_name("type"), src)
            trait = N.text(node.child_by_field_name("trait"), src)
            name = f"impl {trait} for {type_name}" if trait else f"impl {type_name}"
            member_prefix = type_name
        if not name or body is None:
            return
        qual = f"{method_prefix}.{name}" if method_prefix and node.type != "impl_item" else name
        unit = self.make_unit(outer, name, qual, kind, None, parent=parent_qual)
        self.visit_children(body, unit.qualname, member_prefix)

    def add_js_arrow(self, node, outer, parent_qual: str, method_prefix: str) -> None:
        for decl in node.named_children:
            value = decl.child_by_field_name("value") if decl.type == "variable_declarator" else None
            if value is not None and value.type in ("arrow_function", "function_expression", "function"):
                name = N.text(decl.child_by_field_name("name"), self.src)
                self.add_function(decl, outer, parent_qual, method_prefix, name=name)

    def add_go_type(self, spec_node, outer) -> None:
        type_node = spec_node.child_by_field_name("type")
        kinds = {"struct_type": "struct", "interface_type": "interface"}
        if type_node is None or type_node.type not in kinds:
            return
        name = N.text(spec_node.child_by_field_name("name"), self.src)
        self.make_unit(outer, name, name, kinds[type_node.type], None, parent="")

    def make_unit(self, outer, name: str, qual: str, kind: str, body, parent: str) -> SourceUnit:
        count = self.seen.get(qual, 0) + 1
        self.seen[qual] = count
        if count > 1:  # overloads, property setters: keep every one, addressable by position
            qual = f"{qual}#{count}"
        inner = outer
        if outer.type in self.spec.wrappers:
            inner = next((c for c in outer.named_children if c.type in self.spec.functions
                          or c.type in self.spec.containers), outer)
        code = N.text(outer, self.src)
        unit = SourceUnit(
            path=self.rel, language=self.language, name=name, qualname=qual, kind=kind,
            start_line=outer.start_point.row + 1, end_line=outer.end_point.row + 1, code=code,
            signature=N.signature(outer if body is not None else inner, body, self.src),
            existing_doc=N.existing_doc(outer, inner, self.spec, self.src, self.language),
            parent=parent,
        )
        self.units.append(unit)
        self.unit_nodes.append((outer, body))
        return unit


def chunk_source(rel: str, language: str, text: str) -> FileChunks:
    """Chunk one file's text. `rel` is the path recorded on each unit."""
    src = text.encode("utf-8")
    tree = get_parser(language).parse(src)
    root = tree.root_node
    chunker = _Chunker(rel, language, src)
    chunker.visit_children(root, "", "")
    units, nodes = chunker.units, chunker.unit_nodes
    # Skeletons: a container shows its members' signatures, not their bodies.
    callable_bodies = [(b.start_byte, b.end_byte) for (o, b) in nodes if b is not None]
    for unit, (outer, body) in zip(units, nodes):
        if body is None:  # a container
            unit.code = N.elide(src, outer.start_byte, outer.end_byte, callable_bodies, language)
        own = [(o.start_byte, o.end_byte) for (o, b) in nodes if o is not outer
               and outer.start_byte <= o.start_byte and o.end_byte <= outer.end_byte]
        unit.calls = N.call_names(outer, chunker.spec, src, skip=own if body is None else [])
    module = SourceUnit(
        path=rel, language=language, name=rel, qualname=MODULE, kind="module",
        start_line=1, end_line=max(1, root.end_point.row + (0 if root.end_point.column == 0 else 1)),
        code=N.elide(src, 0, len(src), callable_bodies, language),
        existing_doc=N.module_doc(root, chunker.spec, src, language),
        calls=N.call_names(root, chunker.spec, src, skip=[(o.start_byte, o.end_byte) for o, _ in nodes]),
    )
    module.signature = f"module {rel}"
    keys = KeyForms(root, chunker.spec, src, language, nodes)  # cache keys blind to docstrings
    for unit, (outer, body) in zip(units, nodes):
        unit.key_code = keys.text(outer.start_byte, outer.end_byte, skeleton=body is None)
    module.key_code = keys.text(0, len(src), skeleton=True)
    return FileChunks(path=rel, language=language, units=[module] + units, parse_errors=root.has_error)
