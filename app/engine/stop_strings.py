"""Where a stop string ends generation: pure text bookkeeping, no torch (tested with a fake decoder).

Rules (vLLM's): only tokens from the `min_tokens`-th on can complete a stop string; the first
token whose text completes one ends the request; if that token completes several, the one listed
first in `stop` wins. A trailing U+FFFD (half of a multi-byte character, decoded alone) never
matches: it is left out until the next token completes the character.
"""
from __future__ import annotations

from typing import Callable

REPLACEMENT = "\ufffd"


def visible(text: str) -> str:
    """The text without trailing replacement characters (an incomplete multi-byte character)."""
    return text.rstrip(REPLACEMENT)


def find_stop(decode: Callable[[list[int]], str], out_ids: list[int], num_new: int, stops: list[str],
              min_tokens: int = 0, include: bool = False) -> tuple[int, int] | None:
    """The first of the `num_new` newest tokens of `out_ids` that completes a stop string.

    Returns (tokens to keep, end of the output text), or None. The text ends where the stop
    string starts, or where it ends when `include`. Earlier tokens were checked in earlier steps,
    so only matches ending in the new text count.
    """
    first = max(len(out_ids) - num_new + 1, 1, min_tokens)
    if first > len(out_ids):
        return None
    prev = visible(decode(out_ids[: first - 1]))
    for j in range(first, len(out_ids) + 1):
        text = visible(decode(out_ids[:j]))
        for s in stops:
            i = text.find(s, max(0, len(prev) - len(s) + 1))
            if i >= 0:
                return j, i + len(s) if include else i
        prev = text
    return None
