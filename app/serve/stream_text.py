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


class SampleStream:
    """One sample of a stream: its text deltas, and the log-prob entries of the tokens each delta
    covers (tokens whose text is held back ride with the next delta; the last one takes the rest)."""

    def __init__(self, stops: list[str], decode) -> None:
        self.text = StreamText(stops)
        self.decode = decode
        self.lp_sent = 0
        self.first = True
        self.offset = 0  # characters of the tokens whose log-probs were sent (completions' text_offset)

    def update(self, ids: list[int], logprobs: list | None) -> tuple[str, list | None] | None:
        delta = self.text.update(self.decode(ids))
        return (delta, self._take(logprobs, len(ids))) if delta else None

    def finish(self, text: str, token_ids: list[int], logprobs: list | None) -> tuple[str, list | None]:
        return self.text.finish(text), self._take(logprobs, len(token_ids))

    def _take(self, logprobs: list | None, upto: int) -> list | None:
        if logprobs is None:
            return None
        new = logprobs[self.lp_sent:upto]
        self.lp_sent = max(self.lp_sent, upto)
        return new
