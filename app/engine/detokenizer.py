"""Incremental detokenization: a request's text grows by one token per step at a cost that does not
depend on how long the text already is.

Decoding the whole output every step (to look for stop strings) costs O(length) per step, so
O(length^2) per request. Here each step decodes a short window instead, in the manner of
`tokenizers`' DecodeStream: `ids[prefix:read]` (context already turned into text) and
`ids[prefix:]`; the new text is what the second adds to the first. The context token keeps
decoders that treat a sequence's first token specially (SentencePiece's leading space, Strip)
from changing the new text. A window whose text ends in U+FFFD is an incomplete UTF-8 character
(byte-level BPE splits characters across tokens): it stays `pending` until completed.

Invariant (tested against full decodes, multi-byte text included): after every step,
`text + pending == decode(ids)`. Where a decoder breaks the window rule (the window's text is not
an extension of its context's text), the step falls back to one full decode, exactly.
"""
from __future__ import annotations

from typing import Callable

Decode = Callable[[list[int]], str]
_INCOMPLETE = "\ufffd"  # what a decoder makes of bytes that do not yet form a character


class IncrementalDetokenizer:
    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self.text = ""  # the text of ids[:read]; only ever grows (except after a fallback)
        self.pending = ""  # the text of ids[read:] as a full decode shows it now (may end in U+FFFD)
        self._prefix = 0  # ids[prefix:read] is the context the next tokens are decoded with
        self._read = 0
        self._prefix_text = ""  # decode(ids[prefix:read])
        self.full_decodes = 0  # steps where the window rule did not hold (counted for tests)

    @property
    def full_text(self) -> str:
        """Equal to decode(ids)."""
        return self.text + self.pending

    def step(self, token_id: int) -> int:
        """Add one token. Returns the index of `full_text` from which it may differ from before."""
        self.ids.append(token_id)
        changed_from = len(self.text)
        window = self._decode(self.ids[self._prefix:])
        if not window.startswith(self._prefix_text):  # the decoder looks past the window: decode it all
            self.full_decodes += 1
            self._prefix = self._read = 0
            self._prefix_text = self.text = ""
            changed_from = 0
            window = self._decode(self.ids)
        new = window[len(self._prefix_text):]
        if new and not new.endswith(_INCOMPLETE):
            old_prefix, old_read = self._prefix, self._read
            self.text += new
            self.pending = ""
            self._prefix, self._read = old_read, len(self.ids)
            self._prefix_text = window if old_read == old_prefix else self._decode(self.ids[old_read:])
        else:
            self.pending = new
        return changed_from
