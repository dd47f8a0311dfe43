"""Cut a source file into documentable units with tree-sitter.

One shared walk, driven by the per-language tables in `langspec`: functions, methods,
classes/structs/impls/interfaces, and one module unit per file. Class and module units carry a
skeleton (member bodies elided) so they stay short and do not change when a body changes.
Parse errors do not stop chunking: tree-sitter recovers, and the file is flagged.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.docgen import docfinder as D
from app.docgen import nodes as N
from app.docgen.dockey import KeyForms
from app.docgen.languages import get_parser
from app.docgen.exports import mark_exported
from app.docgen.overloads import merge_repeats
from app.docgen.langspec import SPECS, Spec
from app.docgen.units import MODULE, SourceUnit

_JS_FUNCTIONS = ("arrow_function", "function_expression", "function", "generator_function")
_JS_TARGET = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*")  # a.b.c, not a[0] or a().b


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
                inner = next((c for c in node.named_children if c.type in spec.functions
                              or c.type in spec.containers or c.type in spec.values), None)
            if inner is not None:
                self.visit(inner, outer, parent_qual, method_prefix)
            return
        if t in spec.transparent:  # #ifndef guards, `if TYPE_CHECKING:`: definitions at this same level
            self.visit_children(node, parent_qual, method_prefix)
        elif t in spec.functions:
            self.add_function(node, outer, parent_qual, method_prefix)
        elif t in spec.containers:
            self.add_container(node, outer, spec.containers[t], parent_qual, method_prefix)
        elif t in spec.values:
            self.add_value(node, outer, spec.values[t], method_prefix)
        elif t in ("lexical_declaration", "variable_declaration"):
            self.add_js_declaration(node, outer, parent_qual, method_prefix)
        elif t == "expression_statement" and self.language in ("javascript", "typescript", "tsx"):
            self.add_js_assignment(node, outer)
        elif t == "type_declaration" and self.language == "go":
            specs = [c for c in node.named_children if c.type in ("type_spec", "type_alias")]
            for spec_node in specs:
                self.add_go_type(spec_node, node if len(specs) == 1 else spec_node)
        elif t in spec.type_holders:
            inner = node.child_by_field_name("type")
            if inner is not None and inner.type in spec.containers and inner.child_by_field_name("body"):
                fallback = N.text(node.child_by_field_name("declarator"), self.src) if t == "type_definition" else ""
                self.add_container(inner, node, spec.containers[inner.type], parent_qual, method_prefix, fallback)
            elif t == "type_definition":  # typedef char *sds; typedef int (*cmp)(...);
                name = N.text(N.c_declarator_name(node) or node.child_by_field_name("declarator"), self.src)
                self.add_value(node, outer, "type", method_prefix, name=name)
        elif t in spec.scopes:
            body = node.child_by_field_name("body") or node
            name = N.text(node.child_by_field_name("name"), self.src)
            prefix = f"{method_prefix}.{name}" if method_prefix and name else (name or method_prefix)
            self.visit_children(body, parent_qual, prefix)
        elif t in ("class_body", "declaration_list", "field_declaration_list", "enum_body", "block"):
            self.visit_children(node, parent_qual, method_prefix)

    # ---- unit builders --------------------------------------------------------------------
    def add_function(self, node, outer, parent_qual: str, method_prefix: str, name: str = "",
                     fn=None, qual: str = "") -> None:
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
        if lang == "cpp" and receiver and method_prefix and not receiver.startswith(method_prefix + "."):
            prefix = f"{method_prefix}.{receiver}"  # namespace leveldb { Status::Status(...) }
        qual = qual or (f"{prefix}.{name}" if prefix else name)
        if fn is None:
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
        if kind == "interface" and self.language != "java":
            return  # a TS interface is documented as a whole; its member signatures are not units
        self.visit_children(body, unit.qualname, member_prefix)

    def add_js_declaration(self, node, outer, parent_qual: str, method_prefix: str) -> None:
        """`const f = () => ...` is a function; an exported `const X: T = ...` is a value unit."""
        exported = outer.type == "export_statement"
        for decl in node.named_children:
            if decl.type != "variable_declarator":
                continue
            value = decl.child_by_field_name("value")
            name = N.text(decl.child_by_field_name("name"), self.src)
            if value is not None and value.type in _JS_FUNCTIONS:
                self.add_function(decl, outer if len(node.named_children) == 1 else decl, parent_qual,
                                  method_prefix, name=name)
            elif exported and name:
                self.add_value(decl, outer if len(node.named_children) == 1 else decl, "const", method_prefix,
                               name=name, value=value)

    def add_js_assignment(self, node, outer) -> None:
        """`app.init = function init() {...}`, `exports.x = ...`, `module.exports = class ...`."""
        expr = node.named_children[0] if node.named_children else None
        if expr is None or expr.type != "assignment_expression":
            return
        target = N.text(expr.child_by_field_name("left"), self.src)
        value = expr.child_by_field_name("right")
        while value is not None and value.type == "assignment_expression":  # a = b = function ...
            value = value.child_by_field_name("right")
        if value is None or not _JS_TARGET.fullmatch(target):
            return
        for prefix in ("module.exports.", "exports."):
            if target.startswith(prefix):
                target = target[len(prefix):]
        target = target.replace(".prototype.", ".")
        default = target in ("module.exports", "exports")  # the module's default export
        if default:  # use its own name; an anonymous one keeps `module.exports` (a function, not a method)
            target = N.text(value.child_by_field_name("name"), self.src) or target
        name = target if default and "." in target else target.rsplit(".", 1)[-1]
        if value.type in _JS_FUNCTIONS:
            self.add_function(value, outer, "", "", name=name, fn=value, qual=target)
            if "." in target and not default:
                self.units[-1].kind = "method"
        elif value.type in ("class", "class_declaration"):
            self.add_container(value, outer, "class", "", "", fallback=target)

    def add_go_type(self, spec_node, outer) -> None:
        type_node = spec_node.child_by_field_name("type")
        kinds = {"struct_type": "struct", "interface_type": "interface"}
        name = N.text(spec_node.child_by_field_name("name"), self.src)
        if type_node is None or not name:
            return
        kind = kinds.get(type_node.type, "type")  # func types, named ints, maps, aliases, ...
        self.make_unit(outer, name, name, kind, None, parent="")

    def add_value(self, node, outer, kind: str, method_prefix: str, name: str = "", value=None) -> None:
        """Types, constants and macros: the unit is the whole item; a multi-line value is elided in
        the module's skeleton (as function bodies are)."""
        name = name or N.text(node.child_by_field_name("name"), self.src)
        if not name:
            return
        value = value if value is not None else node.child_by_field_name("value")
        body = value if value is not None and value.end_point.row > value.start_point.row else None
        qual = f"{method_prefix}.{name}" if method_prefix else name
        self.make_unit(outer, name, qual, kind, body, parent="")

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
            existing_doc=D.existing_doc(outer, inner, self.spec, self.src, self.language),
            parent=parent,
        )
        self.units.append(unit)
        self.unit_nodes.append((outer, body))
        return unit


_EXPORT_MACRO = re.compile(rb"\b(class|struct)(\s+)([A-Z][A-Z0-9_]{2,})(?=\s+[A-Za-z_])")


def _mask_export_macros(src: bytes) -> bytes:
    """`class LEVELDB_EXPORT Status {`: the grammar cannot know the macro, so it is blanked (same
    length, so every byte offset still points into the real source)."""
    return _EXPORT_MACRO.sub(lambda m: m.group(1) + m.group(2) + b" " * len(m.group(3)), src)


def chunk_source(rel: str, language: str, text: str) -> FileChunks:
    """Chunk one file's text. `rel` is the path recorded on each unit."""
    src = text.encode("utf-8")
    tree = get_parser(language).parse(_mask_export_macros(src) if language == "cpp" else src)
    root = tree.root_node
    chunker = _Chunker(rel, language, src)
    chunker.visit_children(root, "", "")
    units, nodes = chunker.units, chunker.unit_nodes
    mark_exported(units, nodes, root, src, language)
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
        existing_doc=D.module_doc(root, chunker.spec, src, language),
        calls=N.call_names(root, chunker.spec, src, skip=[(o.start_byte, o.end_byte) for o, _ in nodes]),
    )
    module.signature = f"module {rel}"
    keys = KeyForms(root, chunker.spec, src, language, nodes)  # cache keys blind to docstrings
    for unit, (outer, body) in zip(units, nodes):
        unit.key_code = keys.text(outer.start_byte, outer.end_byte, skeleton=body is None)
    module.key_code = keys.text(0, len(src), skeleton=True)
    return FileChunks(path=rel, language=language, units=[module] + merge_repeats(units, text), parse_errors=root.has_error)
