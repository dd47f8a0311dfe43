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


def visible_length(text: str, pending: str) -> int:
    """len(visible(text + pending)) for an incremental detokenizer's (text, pending): `text` never
    ends in an incomplete character, only `pending` may."""
    return len(text) + len(visible(pending))


def find_stop_in_new_text(text: str, pending: str, boundary: int, stops: list[str],
                          include: bool = False) -> int | None:
    """`find_stop`'s rule for one new token, on an incremental detokenizer's text: the end of the
    output text (where the first stop string in list order that ends past `boundary` starts, or
    ends when `include`), or None. `boundary`: the visible length before the token (earlier
    text was searched in earlier steps). Only a tail as long as the stop string is read, so the
    cost does not grow with the output."""
    vis = visible(pending)
    for s in stops:
        start = max(0, boundary - len(s) + 1)
        tail = text[start:] + vis[max(0, start - len(text)):]
        i = tail.find(s)
        if i >= 0:
            return start + i + (len(s) if include else 0)
    return None
