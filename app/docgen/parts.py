"""Split units too long for the model's context into parts, so nothing is ever dropped.

Each part is documented on its own (earlier wave); the whole unit is then documented from its
head (signature and first lines) plus the parts' summaries, so the result describes the whole.
Parts are cut at statement boundaries inside the unit (found with the unit's own grammar), and
splitting recurses until every part, with the prompt around it, fits the window: `fits` counts
with the generator's tokenizer when there is one, else estimates from characters (≈3 characters
per token for code, deliberately on the high side, or a ratio measured with the tokenizer).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from app.docgen.units import SourceUnit

CHARS_PER_TOKEN = 3.0
# Parents whose children are statements or members: a cut before such a child is a clean one.
_SEQUENCE_SUFFIXES = ("block", "body", "statement_list", "_list", "program", "module", "source_file",
                      "translation_unit", "case_statement", "switch_case", "expression_case", "default_case",
                      "switch_block_statement_group", "match_arm", "preproc_if", "preproc_ifdef", "preproc_else")


def estimate_tokens(text: str, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    return int(len(text) / chars_per_token) + 1


def statement_starts(code: str, language: str) -> set[int]:
    """0-based line numbers of `code` where a statement or member begins (comments just above a
    statement go with it). Empty when the grammar is unavailable: cuts then fall on any line."""
    try:
        from app.docgen.languages import get_parser

        root = get_parser(language).parse(code.encode("utf-8")).root_node
    except Exception:  # noqa: BLE001 - no grammar: line cuts are still correct, only less tidy
        return set()
    starts: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        kids = node.named_children
        if node.type.endswith(_SEQUENCE_SUFFIXES) or node is root:
            prev = None
            for k in kids:
                glued = prev is not None and "comment" in prev.type and prev.end_point.row >= k.start_point.row - 1
                if not glued:
                    starts.add(k.start_point.row)
                prev = k
        stack.extend(k for k in kids if k.end_point.row > k.start_point.row)
    return starts


def _split_lines(code: str, budget_tokens: int, chars_per_token: float = CHARS_PER_TOKEN,
                 starts: set[int] | None = None) -> list[tuple[int, str]]:
    """Greedy split: [(first line offset, text)], each within the budget, cut at the last statement
    start that keeps the piece within the budget (any line when no statement start fits)."""
    max_chars = max(64, int(budget_tokens * chars_per_token))
    lines = code.splitlines(keepends=True)
    pieces: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        if len(lines[i]) > max_chars:  # one enormous line (minified code): cut it by characters
            line = lines[i]
            pieces.extend((i, line[k:k + max_chars]) for k in range(0, len(line), max_chars))
            i += 1
            continue
        size, j = 0, i
        while j < len(lines) and size + len(lines[j]) <= max_chars:
            size += len(lines[j])
            j += 1
        if j < len(lines) and starts:
            cut = max((s for s in starts if i < s <= j), default=None)
            j = cut if cut is not None else j
        pieces.append((i, "".join(lines[i:j])))
        i = j
    return pieces


def _source_spans(unit: SourceUnit, code: str, offsets: list[int]) -> list[tuple[int, int]]:
    """Source line span (first, last; 1-based) of each piece starting at `offsets` (0-based lines of
    `code`). Pieces are cut from the docstring-free code, so the source lines they stand for are
    found by matching lines back to `unit.code`; the spans tile the unit's lines (a removed
    docstring belongs to the piece it sat in)."""
    real = unit.code.splitlines()
    if code == unit.code:
        to_real = list(range(len(real)))
    else:
        import difflib

        stable = code.splitlines()
        to_real = [0] * (len(stable) + 1)
        last = 0
        blocks = difflib.SequenceMatcher(None, stable, real, autojunk=False).get_matching_blocks()
        for i in range(len(stable)):
            for b in blocks:  # few blocks: a unit has few docstrings
                if b.a <= i < b.a + b.size:
                    last = b.b + (i - b.a)
                    break
            to_real[i] = last
    firsts = [unit.start_line] + [unit.start_line + to_real[min(o, len(to_real) - 1)] for o in offsets[1:]]
    lasts = [f - 1 for f in firsts[1:]] + [unit.end_line]
    return list(zip(firsts, lasts))


def _estimate_fits(budget_tokens: int, chars_per_token: float) -> Callable[[SourceUnit], bool]:
    return lambda u: estimate_tokens(u.prompt_code or u.code, chars_per_token) <= budget_tokens


def split_unit(unit: SourceUnit, budget_tokens: int, chars_per_token: float = CHARS_PER_TOKEN,
               fits: Callable[[SourceUnit], bool] | None = None) -> list[SourceUnit]:
    """Return [] when the unit fits; otherwise its parts (and set the unit's head prompt).
    `fits(unit)`: whether the unit's whole prompt fits the window (default: a character estimate)."""
    fits = fits or _estimate_fits(budget_tokens, chars_per_token)
    if fits(unit):
        return []
    # Without docstrings: --write must not move the part boundaries. (Part line numbers then
    # count from the docstring-free code.)
    code = unit.stable_code
    if code != unit.code:
        unit.prompt_code = code  # it may fit without its docstrings (--write made it long): shown so
        if fits(unit):
            return []
        unit.prompt_code = ""
    starts = statement_starts(code, unit.language)
    pending = [(off, text) for off, text in _split_lines(code, budget_tokens, chars_per_token, starts)]
    pieces: list[tuple[int, str]] = []
    while pending:  # recurse on any piece the real count says is still too long
        off, text = pending.pop(0)
        piece = replace(unit, code=text, existing_doc="", prompt_code="", kind="part")
        lines = text.count("\n") + (0 if text.endswith("\n") else 1)
        if fits(piece) or (lines <= 1 and len(text) <= 64):
            pieces.append((off, text))
            continue
        smaller = max(16, int(min(budget_tokens, len(text) / chars_per_token) * 0.7))
        sub_starts = {s - off for s in starts if s > off}
        pending[:0] = [(off + o, t) for o, t in _split_lines(text, smaller, chars_per_token, sub_starts)]
    n = len(pieces)
    if n == 1:  # the code fits, only its own long docstring does not: splitting would not help
        unit.prompt_code = code if code != unit.code else ""
        return []
    spans = _source_spans(unit, code, [off for off, _ in pieces])
    parts = []
    for k, ((offset, text), (first, last)) in enumerate(zip(pieces, spans), start=1):
        parts.append(replace(
            unit, name=f"{unit.name} [part {k}/{n}]", qualname=f"{unit.qualname}[part {k}/{n}]", kind="part",
            start_line=first, end_line=last,
            code=text, key_code="", existing_doc="", calls=[], params=[], raises=[], part_of=unit.uid, parts=[],
            parent=unit.qualname, prompt_code="",
        ))
    unit.parts = [p.uid for p in parts]
    note = (f"\n# ... {code.count(chr(10)) + 1} lines in all; the rest was documented in {n} parts"
            " (summaries in the context)\n")
    head_budget = budget_tokens // 2
    while True:  # the head prompt must fit too
        head = _split_lines(code, head_budget, chars_per_token, starts)[0][1]
        unit.prompt_code = head.rstrip("\n") + note
        if fits(unit) or head_budget <= 16:
            break
        head_budget //= 2
    return parts
