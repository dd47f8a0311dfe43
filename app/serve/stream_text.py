"""StreamText: the text a stream may send so far, such that it never has to take anything back.

Between steps the server only knows the tokens so far. It sends their decoded text minus
(a) a trailing U+FFFD (half of a multi-byte character: the next token completes it) and
(b) the longest tail that could still grow into a stop string (the engine would cut it).
The engine's final text is the authority: the last chunk sends whatever of it is not yet sent.
"""
from __future__ import annotations

from app.engine.stop_strings import visible


def stop_holdback(text: str, stops: list[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


class StreamText:
    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.sent = ""

    def update(self, text: str) -> str:
        """The new delta for the running text `text` ("" when nothing is safe to send yet)."""
        text = visible(text)
        for s in self.stops:  # a complete stop string: the engine ends here; never send past it
            i = text.find(s)
            if i >= 0:
                text = text[:i]
        text = text[: len(text) - stop_holdback(text, self.stops)]
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

    def finish(self, final_text: str) -> str:
        """The last delta: the rest of the engine's final text."""
        if not final_text.startswith(self.sent):  # should not happen with byte-level tokenizers
            raise RuntimeError("streamed text diverged from the final text; please report this")
        delta, self.sent = final_text[len(self.sent):], final_text
        return delta
