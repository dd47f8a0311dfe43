"""Split units too long for the model's context into parts, so nothing is ever dropped.

Each part is documented on its own (earlier wave); the whole unit is then documented from its
head (signature and first lines) plus the parts' summaries, so the result describes the whole.
Token counts are estimated from characters: ≈3 characters per token for code by default
(deliberately on the high side), or a ratio the runner measured with the generator's own tokenizer
(small-vocabulary tokenizers need far fewer characters per token).
"""
from __future__ import annotations

from dataclasses import replace

from app.docgen.units import SourceUnit

CHARS_PER_TOKEN = 3.0


def estimate_tokens(text: str, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    return int(len(text) / chars_per_token) + 1


def _split_lines(code: str, budget_tokens: int, chars_per_token: float = CHARS_PER_TOKEN) -> list[tuple[int, str]]:
    """Greedy split on line boundaries: [(first line offset, text)], each within the budget."""
    max_chars = max(64, int(budget_tokens * chars_per_token))
    pieces: list[tuple[int, str]] = []
    cur: list[str] = []
    cur_len, cur_start = 0, 0
    for i, line in enumerate(code.splitlines(keepends=True)):
        while len(line) > max_chars:  # one enormous line (minified code): cut it by characters
            if cur:
                pieces.append((cur_start, "".join(cur)))
                cur, cur_len = [], 0
            pieces.append((i, line[:max_chars]))
            line = line[max_chars:]
        if cur and cur_len + len(line) > max_chars:
            pieces.append((cur_start, "".join(cur)))
            cur, cur_len = [], 0
        if not cur:
            cur_start = i
        cur.append(line)
        cur_len += len(line)
    if cur:
        pieces.append((cur_start, "".join(cur)))
    return pieces


def split_unit(unit: SourceUnit, budget_tokens: int, chars_per_token: float = CHARS_PER_TOKEN) -> list[SourceUnit]:
    """Return [] when the unit fits; otherwise its parts (and set the unit's head prompt)."""
    if estimate_tokens(unit.code, chars_per_token) <= budget_tokens:
        return []
    # Without docstrings: --write must not move the part boundaries. (Part line numbers then
    # count from the docstring-free code; nothing shows them.)
    code = unit.stable_code
    if code != unit.code and estimate_tokens(code, chars_per_token) <= budget_tokens:
        unit.prompt_code = code  # it fits without its docstrings (--write made it long): shown so
        return []
    pieces = _split_lines(code, budget_tokens, chars_per_token)
    n = len(pieces)
    parts = []
    for k, (offset, text) in enumerate(pieces, start=1):
        lines = text.count("\n") + (0 if text.endswith("\n") else 1)
        parts.append(replace(
            unit, name=f"{unit.name} [part {k}/{n}]", qualname=f"{unit.qualname}[part {k}/{n}]", kind="part",
            start_line=unit.start_line + offset, end_line=unit.start_line + offset + max(lines, 1) - 1,
            code=text, key_code="", existing_doc="", calls=[], params=[], raises=[], part_of=unit.uid, parts=[],
            parent=unit.qualname, prompt_code="",
        ))
    unit.parts = [p.uid for p in parts]
    head = _split_lines(code, budget_tokens // 2, chars_per_token)[0][1]
    unit.prompt_code = (
        head.rstrip("\n")
        + f"\n# ... {code.count(chr(10)) + 1} lines in all; the rest was documented in {n} parts"
          " (summaries in the context)\n"
    )
    return parts
