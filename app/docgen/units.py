"""SourceUnit: one documentable piece of code (module, class, function, method, part) and
what the pipeline knows about it beyond the `CodeChunk` the generator sees."""
from __future__ import annotations

from dataclasses import dataclass, field

from app.llm.types import CodeChunk

MODULE = "<module>"
CONTAINER_KINDS = {"class", "struct", "impl", "interface", "trait", "enum", "namespace"}
CALLABLE_KINDS = {"function", "method"}


@dataclass
class SourceUnit:
    path: str  # posix, relative to the walk root
    language: str
    name: str
    qualname: str  # "Class.method", "<module>", "f[part 2/3]"
    kind: str  # module | function | method | class | struct | impl | interface | trait | enum | part
    start_line: int  # 1-based, inclusive
    end_line: int
    code: str
    signature: str = ""
    existing_doc: str = ""
    params: list[str] = field(default_factory=list)
    returns_value: bool = False
    yields: bool = False
    raises: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # callees as written: "helper", "self.bump", "mod.f"
    parent: str = ""  # qualname of the enclosing container unit ("" at top level)
    part_of: str = ""  # uid of the whole unit when this is a part
    parts: list[str] = field(default_factory=list)  # uids of this unit's parts when it was split
    prompt_code: str = ""  # code shown to the model when it differs from `code` (a split unit's head)
    prompt_doc: str = ""  # existing_doc as the prompt shows it when cut to a budget (docbudget.py)
    exported: bool = True  # public API by the language's rule (see exports.py); `docgen check` uses it
    key_code: str = ""  # `code` without docstrings/doc comments (see dockey); what cache keys hash

    @property
    def stable_code(self) -> str:
        """The code its cache key and code hash are computed from: docgen's own docstrings never count."""
        return self.key_code or self.code

    @property
    def key_text(self) -> str:
        """The code part of its result key: what the model is shown, docstrings left out."""
        return self.prompt_code or self.stable_code

    @property
    def uid(self) -> str:
        return f"{self.path}::{self.qualname}"

    @property
    def is_public(self) -> bool:
        if self.kind == "part":
            return False
        if self.kind == "module":
            return True
        last = self.name.split(".")[-1]
        if last.startswith("__") and last.endswith("__"):
            return False  # dunder methods: their meaning is the protocol's, docs are optional
        return not last.startswith("_")

    def to_chunk(self, key: str, context: str = "") -> CodeChunk:
        return CodeChunk(
            code=self.prompt_code or self.code,
            id=key,
            path=self.path,
            language=self.language,
            name=self.qualname if self.kind != "module" else self.path,
            kind=self.kind,
            start_line=self.start_line,
            end_line=self.end_line,
            signature=self.signature,
            existing_doc=self.prompt_doc or self.existing_doc,
            context=context,
        )
