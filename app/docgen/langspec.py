"""Per-language tables for the chunker: which tree-sitter node types are units, wrappers,
calls, returns and throws. One table per grammar; the chunker's walk is shared."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Spec:
    functions: dict[str, str]  # node type -> kind ("function"; becomes "method" inside a container)
    containers: dict[str, str]  # node type -> kind ("class", "struct", "impl", ...)
    wrappers: frozenset[str] = frozenset()  # nodes whose span covers a definition (decorators, export)
    scopes: frozenset[str] = frozenset()  # nodes to descend into without a unit (namespace, extern "C")
    # Nodes whose children are definitions at the same level: preprocessor blocks (include guards),
    # Python `if TYPE_CHECKING:` / `try: ... except ImportError:` blocks. No name is added.
    transparent: frozenset[str] = frozenset()
    values: dict[str, str] = field(default_factory=dict)  # typed/constant items -> kind ("type", "const")
    type_holders: frozenset[str] = frozenset()  # C/C++ nodes holding a struct/class in their `type`
    comments: frozenset[str] = frozenset({"comment"})
    calls: dict[str, str] = field(default_factory=dict)  # call node type -> field naming the callee
    returns: frozenset[str] = frozenset({"return_statement"})
    throws: frozenset[str] = frozenset({"throw_statement"})
    return_type_field: str = ""  # field holding a declared return type, if the grammar has one


FUNCTION_LIKE = frozenset({
    "function_definition", "lambda", "function_declaration", "function_expression", "arrow_function",
    "generator_function_declaration", "generator_function", "method_definition", "func_literal",
    "closure_expression", "function_item", "lambda_expression", "method_declaration",
    "constructor_declaration", "class_definition", "class_declaration", "class_specifier",
})
NO_VALUE_TYPES = {"void", "()", "None", "NoReturn", "Promise<void>", "!", ""}

_JS_CALLS = {"call_expression": "function", "new_expression": "constructor"}
_C_CALLS = {"call_expression": "function"}
_PREPROC = frozenset({"preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef"})

SPECS: dict[str, Spec] = {
    "python": Spec(
        functions={"function_definition": "function"},
        containers={"class_definition": "class"},
        wrappers=frozenset({"decorated_definition"}),
        transparent=frozenset({"if_statement", "elif_clause", "else_clause", "try_statement", "except_clause",
                               "finally_clause", "with_statement"}),
        calls={"call": "function"},
        throws=frozenset({"raise_statement"}),
        return_type_field="return_type",
    ),
    "javascript": Spec(
        functions={"function_declaration": "function", "generator_function_declaration": "function",
                   "method_definition": "method"},
        containers={"class_declaration": "class"},
        wrappers=frozenset({"export_statement"}),
        calls=_JS_CALLS,
    ),
    "typescript": Spec(
        # Overload signatures (`function f(a: string): void;`) are merged with the implementation.
        functions={"function_declaration": "function", "generator_function_declaration": "function",
                   "method_definition": "method", "function_signature": "function", "method_signature": "method",
                   "abstract_method_signature": "method"},
        containers={"class_declaration": "class", "abstract_class_declaration": "class",
                    "interface_declaration": "interface", "enum_declaration": "enum"},
        wrappers=frozenset({"export_statement", "ambient_declaration"}),
        values={"type_alias_declaration": "type"},
        scopes=frozenset({"internal_module", "module"}),
        calls=_JS_CALLS,
        return_type_field="return_type",
    ),
    "go": Spec(
        functions={"function_declaration": "function", "method_declaration": "method"},
        containers={},  # named types of every kind come from type_declaration (see chunker)
        calls=_C_CALLS,
        return_type_field="result",
    ),
    "rust": Spec(
        # Trait methods without a default body are units too, as Java interface methods are.
        functions={"function_item": "function", "function_signature_item": "function"},
        containers={"struct_item": "struct", "enum_item": "enum", "impl_item": "impl", "trait_item": "trait",
                    "union_item": "struct"},
        values={"const_item": "const", "static_item": "const", "type_item": "type", "macro_definition": "macro"},
        scopes=frozenset({"mod_item"}),
        comments=frozenset({"line_comment", "block_comment"}),
        calls=_C_CALLS,
        returns=frozenset({"return_expression"}),
        throws=frozenset(),
        return_type_field="return_type",
    ),
    "java": Spec(
        functions={"method_declaration": "method", "constructor_declaration": "method"},
        containers={"class_declaration": "class", "interface_declaration": "interface",
                    "enum_declaration": "enum", "record_declaration": "class",
                    "annotation_type_declaration": "interface"},
        scopes=frozenset({"enum_body_declarations"}),
        comments=frozenset({"line_comment", "block_comment"}),
        calls={"method_invocation": "name", "object_creation_expression": "type"},
        return_type_field="type",
    ),
    "c": Spec(
        functions={"function_definition": "function"},
        containers={"struct_specifier": "struct", "union_specifier": "struct", "enum_specifier": "enum"},
        scopes=frozenset({"linkage_specification", "declaration_list"}),
        transparent=_PREPROC,
        type_holders=frozenset({"declaration", "type_definition"}),
        calls=_C_CALLS,
        throws=frozenset(),
        return_type_field="type",
    ),
    "cpp": Spec(
        functions={"function_definition": "function"},
        containers={"class_specifier": "class", "struct_specifier": "struct", "union_specifier": "struct",
                    "enum_specifier": "enum"},
        wrappers=frozenset({"template_declaration"}),
        scopes=frozenset({"namespace_definition", "linkage_specification", "declaration_list"}),
        transparent=_PREPROC,
        type_holders=frozenset({"declaration", "type_definition", "field_declaration"}),
        calls=_C_CALLS,
        return_type_field="type",
    ),
}
SPECS["tsx"] = SPECS["typescript"]
