"""StreamText: streamed deltas never need taking back (cases after vLLM's stop-string holdback tests)."""
from __future__ import annotations

import pytest

from app.serve.stream_text import StreamText, stop_holdback


def test_holdback_only_when_the_tail_could_start_a_stop_string():
    s = StreamText(["STOP"])
    assert s.update("hello ") == "hello "
    assert s.update("hello worldST") == "world"  # "ST" may become "STOP"
    assert s.update("hello worldSTAY") == "STAY"  # it did not


def test_deltas_never_include_text_a_stop_string_removes():
    s = StreamText(["STOP"])
    assert s.update("abcST") == "abc"
    assert s.update("abcSTxy") == "STxy"
    assert s.update("abcSTxySTO") == ""
    assert s.finish("abcSTxy") == ""  # the engine cut at "STOP"
    assert s.sent == "abcSTxy"


def test_half_characters_wait_for_the_next_token():
    s = StreamText([])
    assert s.update("caf\ufffd") == "caf"
    assert s.update("café") == "é"


def test_final_text_completes_the_stream_and_divergence_is_reported():
    s = StreamText(["\n\n"])
    assert s.update("line\n") == "line"
    assert s.finish("line\n") == "\n"
    t = StreamText([])
    t.update("abc")
    with pytest.raises(RuntimeError, match="diverged"):
        t.finish("abd")


@pytest.mark.parametrize("text,stops,n", [("xyzab", ["abc"], 2), ("xyza", ["abc", "ab"], 1), ("xyz", ["abc"], 0),
                                          ("aab", ["aab"], 0)])
def test_stop_holdback(text, stops, n):
    assert stop_holdback(text, stops) == n
