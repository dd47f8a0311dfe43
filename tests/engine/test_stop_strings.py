"""Stop-string rules (app/engine/stop_strings.py) with a one-character-per-token decoder.

Cases ported (rewritten) from vLLM's detokenizer tests (stop strings with min_tokens, include_stop_str_in_output,
a stop string and a stop token in one step) and transformers' stop-string tests (stop strings
spanning tokens, overlapping candidates), plus the vLLM rules the issue lists: the first
completed stop string wins, ties in one token go to list order, a half character never matches.
"""
from __future__ import annotations

import pytest

from app.engine.stop_strings import find_stop


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def dec(tokens: list[int]) -> str:
    return "".join(chr(t) for t in tokens)


def stop_after_each_token(text: str, stops: list[str], min_tokens: int = 0, include: bool = False):
    """Feed `text` one token per step, as the engine does; returns (kept text, output text) at the stop."""
    out = []
    for t in ids(text):
        out.append(t)
        hit = find_stop(dec, out, 1, stops, min_tokens, include)
        if hit:
            keep, end = hit
            return dec(out[:keep]), dec(out[:keep])[:end]
    return dec(out), None


@pytest.mark.parametrize("min_tokens,stop,text", [
    (0, "e", " is L"),          # vLLM test_min_tokens_with_stop
    (8, "e", " is Lee, and I'm a stud"),  # one char per token here: tokens 6, 7 are too early
    (0, "and", " is Lee, "),
])
def test_min_tokens_delays_stop_strings(min_tokens, stop, text):
    full = " is Lee, and I'm a student in the college of engineering"
    _, got = stop_after_each_token(full, [stop], min_tokens)
    assert got == text


@pytest.mark.parametrize("include,expected", [(False, "ab"), (True, "abcd")])
def test_include_stop_str_in_output(include, expected):
    kept, text = stop_after_each_token("abcdeZ", ["cd"], include=include)
    assert kept == "abcd" and text == expected


def test_several_new_tokens_in_one_step_cut_after_the_completing_one():
    """A speculative step adds several tokens: the ones after the completing token are dropped."""
    out = ids("abcdeZ")
    assert find_stop(dec, out, 6, ["cd"]) == (4, 2)
    assert find_stop(dec, out, 6, ["cd"], include=True) == (4, 4)


def test_completed_first_wins_not_started_first():
    # "bcd" starts first but "c" completes first (vLLM's rule)
    assert stop_after_each_token("abcde", ["bcd", "c"])[1] == "ab"
    # same token completes both: list order decides
    assert stop_after_each_token("xabc", ["abc", "bc"])[1] == "x"
    assert stop_after_each_token("xabc", ["bc", "abc"])[1] == "xa"


def test_stop_string_spanning_tokens_and_repeated_prefixes():
    assert stop_after_each_token("aaab", ["aab"])[1] == "a"
    assert stop_after_each_token("hello world", ["lo w"])[1] == "hel"
    assert stop_after_each_token("no stop here", ["xyz"])[1] is None


def test_matches_only_in_new_text():
    """A stop string already inside text before min_tokens never triggers later."""
    assert stop_after_each_token("stop and go", ["stop"], min_tokens=5)[1] is None


def test_half_character_never_matches_as_replacement_char():
    """Two byte tokens of 'é' (UTF-8 c3 a9): after the first, the text ends in U+FFFD."""
    table = {1: b"x", 2: b"\xc3", 3: b"\xa9"}

    def byte_dec(tokens):
        return b"".join(table[t] for t in tokens).decode("utf-8", errors="replace")

    assert find_stop(byte_dec, [1, 2], 1, ["\ufffd"]) is None
    assert find_stop(byte_dec, [1, 2, 3], 1, ["é"]) == (3, 1)
