"""The data the user's API speaks: code chunks in, documentation results out.

`CodeChunk` is what a doc generator documents; `DocResult` is what it returns for one chunk.
Both generators (the transformers baseline and the engine-backed optimized one) satisfy the
`DocGenerator` protocol, so callers such as `app.docgen` can take either.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, Union, runtime_checkable


@dataclass
class CodeChunk:
    """One unit of code to document (a function, method, class, or module)."""

    code: str
    id: str = ""
    path: str = ""
    language: str = "python"
    name: str = ""
    kind: str = "function"  # function | method | class | module | struct | impl | part ...
    start_line: int = 0
    end_line: int = 0
    signature: str = ""
    existing_doc: str = ""
    # Optional extra context for the prompt, e.g. callee signatures with one-line summaries.
    context: str = ""
    # New tokens allowed for this chunk alone; 0: the generator's own max_new_tokens. docgen raises
    # it to retry a doc that was cut off at the limit (the generator still caps it to its window).
    max_new_tokens: int = 0
    # Scheduling hint for generators that queue requests (lower first; docgen: minus the length of
    # the dependency chain waiting on this chunk). Never part of the prompt or of any result key.
    priority: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.code, str):
            raise TypeError(f"CodeChunk.code must be a str, got {type(self.code).__name__}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ValueError(f"CodeChunk.max_new_tokens must be an integer >= 0 (0: the generator's limit), "
                             f"got {self.max_new_tokens!r}")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise TypeError(f"CodeChunk.priority must be an int (lower first), got {self.priority!r}")
        if not self.id:
            digest = hashlib.sha1(f"{self.path}:{self.name}:{self.code}".encode("utf-8", "replace"))
            self.id = digest.hexdigest()[:16]


ChunkLike = Union[CodeChunk, str, Mapping[str, Any]]


def as_chunk(item: ChunkLike) -> CodeChunk:
    """Accept a CodeChunk, a plain code string, or a dict with a `code` key."""
    if isinstance(item, CodeChunk):
        return item
    if isinstance(item, str):
        return CodeChunk(code=item)
    if isinstance(item, Mapping):
        if "code" not in item:
            raise ValueError("a chunk given as a dict needs a 'code' key (the source to document)")
        known = {f for f in CodeChunk.__dataclass_fields__}
        unknown = set(item) - known
        if unknown:
            raise ValueError(f"unknown chunk fields {sorted(unknown)}; known fields: {sorted(known)}")
        return CodeChunk(**dict(item))
    raise TypeError(
        f"cannot document a {type(item).__name__}: pass a CodeChunk, a code string, or a dict with 'code'"
    )


def usable_chunk(item: ChunkLike) -> tuple[CodeChunk | None, DocResult | None]:
    """(chunk, None) for a chunk a generator can document; (None, error result) otherwise: bad
    input fails alone, as a result, never as an exception that would sink the batch."""
    try:
        c = as_chunk(item)
    except (TypeError, ValueError) as e:
        return None, DocResult(chunk_id="", finish_reason="error", error=f"{type(e).__name__}: {e}")
    if not c.code.strip():
        return None, DocResult(chunk_id=c.id, finish_reason="error",
                               error="ValueError: the chunk has no code (empty or whitespace only)")
    return c, None


@dataclass
class DocResult:
    """The documentation generated for one chunk (or the error that chunk met)."""

    chunk_id: str
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    finish_reason: str = ""  # "stop" | "length" | "error" | "cancelled"
    # Seconds: time waiting before first schedule, to first token, and total.
    queue_time: float = 0.0
    time_to_first_token: float = 0.0
    total_time: float = 0.0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class DocGenerator(Protocol):
    """What the doc pipeline needs from a generator.

    Optional attributes docgen uses when present: `max_seq_length` (the context window),
    `count_tokens(text)` / `count_prompt_tokens(chunk)` (sizing chunks), and `max_concurrency`
    (requests the backend runs at once; docgen keeps about twice that many in flight).
    """

    model_id: str

    async def generate_async(self, chunk: ChunkLike) -> DocResult: ...

    async def generate_batch_async(self, chunks: Sequence[ChunkLike]) -> list[DocResult]: ...

    def generate_batch(self, chunks: Sequence[ChunkLike]) -> list[DocResult]: ...

    def report(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass
class GeneratorFactory:
    """How to build a generator, plus what is known about it before building it.

    `model_id` is part of every stored result's key, so a caller that declares it lets docgen look
    up stored results first and build (load) the generator only if something must be generated.
    """

    model_id: str
    build: Callable[[], DocGenerator]

    def __call__(self) -> DocGenerator:
        return self.build()
