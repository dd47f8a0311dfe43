"""A deterministic stand-in for a model, for tests and `docgen run --generator fake`.

Implements the `DocGenerator` protocol. Its text is derived from the chunk alone: the first line
(the summary callers see) depends on the name and signature, the rest on the code and context,
so editing a body changes only that chunk's doc, and editing a signature changes the summary.
It is not a documentation model; it exists so the pipeline can be exercised without one.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any, Sequence

from app.llm.types import ChunkLike, DocResult, as_chunk


def _h(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:n]


class FakeDocGenerator:
    def __init__(self, model_id: str = "fake", delay: float = 0.0, log_path: str | None = None,
                 fail_first: tuple[str, ...] = (), max_seq_length: int = 4096, gate_path: str | None = None,
                 max_new_tokens: int = 256, needs_tokens: dict[str, int] | None = None) -> None:
        self.model_id = model_id
        self.gate_path = gate_path  # when set, no chunk is generated before this file exists (tests hold a run)
        self.delay = delay  # seconds per chunk, to make runs slow enough to interrupt
        self.log_path = log_path  # every generated chunk id is appended here (to prove work is done once)
        self.fail_first = set(fail_first)  # names whose first attempt documents an invented parameter
        self.max_seq_length = max_seq_length
        self.max_new_tokens = max_new_tokens  # a chunk's own CodeChunk.max_new_tokens overrides it
        # name -> new tokens its full doc needs: under a smaller limit the doc is cut off ("length")
        self.needs_tokens = dict(needs_tokens or {})
        self.limits: list[tuple[str, int]] = []  # (chunk name, the limit it was generated with), in call order
        self.calls = 0
        self.generated: list[str] = []

    def _text(self, chunk) -> str:
        short = chunk.name.split(".")[-1].split(" [")[0] if chunk.kind != "module" else chunk.path
        first = f"Handles `{short}` ({chunk.kind}, signature {_h(chunk.signature or chunk.name, 6)})."
        if chunk.kind == "module":
            first = f"Module {chunk.path}: {chunk.code.count(chr(10)) + 1} lines of {chunk.language}."
        body = f"Code fingerprint {_h(chunk.code)}; context fingerprint {_h(chunk.context)}."
        if chunk.name.split(".")[-1] in self.fail_first and "failed these checks" not in chunk.context:
            body += "\n\nArgs:\n    invented_param: not a parameter at all."
        return f"{first}\n\n{body}"

    def _result(self, chunk) -> DocResult:
        text = self._text(chunk)
        limit = min(chunk.max_new_tokens or self.max_new_tokens, self.max_seq_length - self._prompt_tokens(chunk))
        self.limits.append((chunk.name, limit))
        need = self.needs_tokens.get(chunk.name.split(".")[-1], 0)
        finish, tokens = "stop", len(text) // 3 + 1
        if need > limit:  # the model would have gone on: its text ends mid-sentence at the limit
            finish, tokens, text = "length", limit, text.split("\n")[0] + "\n\nThe rest of this doc explains the"
        self.calls += 1
        self.generated.append(chunk.id)
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(chunk.id + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        return DocResult(chunk_id=chunk.id, text=text, prompt_tokens=self._prompt_tokens(chunk),
                         completion_tokens=tokens, finish_reason=finish, total_time=self.delay)

    @staticmethod
    def _prompt_tokens(chunk) -> int:
        return len(chunk.code) // 3 + 1

    async def generate_async(self, chunk: ChunkLike) -> DocResult:
        chunk = as_chunk(chunk)
        while self.gate_path and not os.path.exists(self.gate_path):
            await asyncio.sleep(0.02)
        if self.delay:
            await asyncio.sleep(self.delay)
        return self._result(chunk)

    async def generate_batch_async(self, chunks: Sequence[ChunkLike]) -> list[DocResult]:
        out = []
        for c in chunks:
            out.append(await self.generate_async(c))
        return out

    def generate_batch(self, chunks: Sequence[ChunkLike]) -> list[DocResult]:
        return asyncio.run(self.generate_batch_async(chunks))

    def report(self) -> dict[str, Any]:
        return {"generator": "fake", "calls": self.calls}

    def close(self) -> None:
        pass
