"""What the doc generators share.

DocGeneratorBase (every generator: the in-process baseline and optimized ones, the OpenAI-server
and Ray backends): the closed check, `close()` once, the context managers, the concurrent batch
over `generate_async`, and the synchronous wrappers over the async batch call. A subclass
implements `_release()` (free the model, stop the engine, close connections) and
`generate_async` (or `generate_batch_async`); it may override `generate`/`generate_batch` with
native synchronous code.

LocalGeneratorBase adds token counting with the model's own tokenizer (`self.tokenizer`), for the
generators that hold one. The others count otherwise or not at all: docgen treats a generator
without `count_tokens` as one whose prompt sizes it must estimate.
"""
from __future__ import annotations

import asyncio
from typing import Any, Sequence

from app.llm import prompts
from app.llm.types import ChunkLike, DocResult


def sync_batch(generate_batch_async, chunks: Sequence[ChunkLike]) -> list[DocResult]:
    """Run an async batch call from synchronous code; refused inside a running event loop, where
    it would block the loop (the caller must await the async call there)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(generate_batch_async(chunks))
    raise RuntimeError("generate_batch() blocks; inside async code use `await generator.generate_batch_async(...)`")


class DocGeneratorBase:
    _closed: bool = False

    # ----- lifetime -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} is closed; create a new one")

    def _release(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _release()")

    def close(self) -> None:
        """Free the model (idempotent; generation after this raises RuntimeError)."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: Any) -> None:
        # close() may wait for a running generation or join a thread: off the event loop.
        await asyncio.to_thread(self.close)

    # ----- generation: the batch over generate_async, and synchronous wrappers -------------
    async def generate_async(self, chunk: ChunkLike) -> DocResult:
        raise NotImplementedError(f"{type(self).__name__} must implement generate_async()")

    async def generate_batch_async(self, chunks: Sequence[ChunkLike]) -> list[DocResult]:
        """Document every chunk concurrently; results in input order."""
        self._check_open()
        return list(await asyncio.gather(*(self.generate_async(c) for c in chunks)))

    def generate_batch(self, chunks: Sequence[ChunkLike]) -> list[DocResult]:
        """Synchronous `generate_batch_async` (for code without an event loop)."""
        return sync_batch(self.generate_batch_async, chunks)

    def generate(self, chunk: ChunkLike) -> DocResult:
        """Document one chunk (synchronous)."""
        return self.generate_batch([chunk])[0]


class LocalGeneratorBase(DocGeneratorBase):
    """A generator holding the model's tokenizer: docgen sizes its chunks with these counts."""
    tokenizer: Any

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with this model's tokenizer."""
        return prompts.count_tokens(self.tokenizer, text)

    def count_prompt_tokens(self, chunk: ChunkLike) -> int:
        """Tokens of the full prompt this generator would send for `chunk`."""
        return prompts.count_prompt_tokens(self.tokenizer, chunk)
