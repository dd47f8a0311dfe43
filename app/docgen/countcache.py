"""Exact prompt counts remembered between runs, so a rerun plans exactly as the first run did
without loading the model.

The planner splits a unit when its whole prompt, counted with the generator's tokenizer, would
not fit the window (`PlanConfig.count_prompt_tokens`). Result keys follow the split, so a rerun
that planned with a character estimate instead could cut a unit differently and miss its stored
results. The first run records every count it made (keyed by the chunk's content); a rerun reads
them back and asks the real counter (the tokenizer files alone, else the loaded generator) only
for chunks it has not seen: unchanged code is planned without any model library.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Callable

from app.llm.types import CodeChunk


def chunk_key(chunk: CodeChunk) -> str:
    fields = dataclasses.asdict(chunk)
    fields.pop("id", None)  # the result key, derived from the plan: not part of the prompt
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()[:20]


class RememberedCounts:
    """A `count_prompt_tokens` that answers from `known` first; `counter()` gives the real one,
    asked for at most once and only on a miss."""

    def __init__(self, known: dict[str, int], counter: Callable[[], Callable[[CodeChunk], int]]) -> None:
        self.known = dict(known)
        self._make = counter
        self._real: Callable[[CodeChunk], int] | None = None
        self.misses = 0

    def __call__(self, chunk: CodeChunk) -> int:
        key = chunk_key(chunk)
        n = self.known.get(key)
        if n is None:
            if self._real is None:
                self._real = self._make()
            n = self.known[key] = int(self._real(chunk))
            self.misses += 1
        return n
