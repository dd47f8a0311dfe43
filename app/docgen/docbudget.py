"""Keep a unit's existing documentation from crowding its prompt.

A unit whose docstring (or doc comment) alone is longer than the window would otherwise be split
into parts that document the docstring, and its head prompt would show only the signature. The
prompt gets the doc's first lines up to a budget, then a note of how many lines were left out;
the code itself (and what `docgen check` and the writers see) is unchanged.
"""
from __future__ import annotations

from app.docgen.parts import estimate_tokens
from app.docgen.units import SourceUnit

DOC_SHARE = 0.25  # at most this share of the code budget goes to the existing doc


def _doc_line_range(code_lines: list[str], doc: str) -> tuple[int, int] | None:
    """(first, last) 0-based lines of `code_lines` holding the doc's first and last lines."""
    doc_lines = [ln.strip() for ln in doc.strip().splitlines() if ln.strip()]
    if not doc_lines:
        return None
    first = next((i for i, ln in enumerate(code_lines) if doc_lines[0] in ln), None)
    if first is None:
        return None
    last = next((j for j in range(len(code_lines) - 1, first - 1, -1) if doc_lines[-1] in code_lines[j]), None)
    return (first, last) if last is not None else None


def cut_existing_doc(code: str, doc: str, max_chars: int) -> str | None:
    """`code` with the doc's lines beyond `max_chars` replaced by one note line; None when the doc
    is short enough or cannot be located in the code."""
    if len(doc) <= max_chars:
        return None
    lines = code.splitlines(keepends=True)
    found = _doc_line_range(lines, doc)
    if found is None or found[1] - found[0] < 2:
        return None
    first, last = found
    size, keep = 0, first
    while keep < last and size + len(lines[keep]) <= max_chars:
        size += len(lines[keep])
        keep += 1
    if keep >= last:
        return None
    indent = lines[keep][: len(lines[keep]) - len(lines[keep].lstrip())]
    # The last doc line stays: it carries the closing delimiter (`"""`, `*/`).
    note = f"{indent}... ({last - keep} lines of the existing documentation left out of this prompt)\n"
    return "".join(lines[:keep]) + note + "".join(lines[last:])


def fit_existing_doc(unit: SourceUnit, code_budget_tokens: int, chars_per_token: float) -> None:
    """When the doc exceeds its share of the budget: `unit.prompt_code` is the code with the doc cut
    (where the doc is inside the code, as Python's is) and `unit.prompt_doc` the doc's head."""
    if not unit.existing_doc or unit.prompt_code:
        return
    budget = int(code_budget_tokens * DOC_SHARE)
    if estimate_tokens(unit.existing_doc, chars_per_token) <= budget:
        return
    max_chars = int(budget * chars_per_token)
    head = unit.existing_doc[:max_chars].rsplit("\n", 1)[0]
    unit.prompt_doc = head + "\n... (the rest of the existing documentation left out of this prompt)"
    cut = cut_existing_doc(unit.code, unit.existing_doc, max_chars)
    if cut is not None:
        unit.prompt_code = cut
