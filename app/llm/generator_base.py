"""What the baseline and the optimized doc generators share: token counting with the model's
tokenizer, the closed check, `close()` once, the context managers, and the synchronous wrappers
over the async batch call.

A subclass sets `self.tokenizer`, implements `_release()` (free the model or stop the engine) and
`generate_batch_async`; it may override `generate`/`generate_batch` with native synchronous code.
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
    tokenizer: Any
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

    # ----- generation: synchronous wrappers over the async batch call ----------------------
    async def generate_batch_async(self, chunks: Sequence[ChunkLike]) -> list[DocResult]:
        raise NotImplementedError(f"{type(self).__name__} must implement generate_batch_async()")

    def generate_batch(self, chunks: Sequence[ChunkLike]) -> list[DocResult]:
        """Synchronous `generate_batch_async` (for code without an event loop)."""
        return sync_batch(self.generate_batch_async, chunks)

    def generate(self, chunk: ChunkLike) -> DocResult:
        """Document one chunk (synchronous)."""
        return self.generate_batch([chunk])[0]

    # ----- token counting (docgen sizes its chunks with these) -----------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with this model's tokenizer."""
        return prompts.count_tokens(self.tokenizer, text)

    def count_prompt_tokens(self, chunk: ChunkLike) -> int:
        """Tokens of the full prompt this generator would send for `chunk`."""
        return prompts.count_prompt_tokens(self.tokenizer, chunk)
