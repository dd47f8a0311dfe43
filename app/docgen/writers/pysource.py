"""A Python file's bytes as text and back, unchanged apart from docgen's edits.

The encoding is what Python itself would use (PEP 263 declaration, UTF-8 BOM, else UTF-8), so a
`# -*- coding: latin-1 -*-` file is written back in latin-1 and a BOM survives. Lines are split
only where Python's tokenizer ends a line (`\\n`, `\\r\\n`, `\\r`), so a form feed or U+2028 inside a
line never shifts line numbers away from the parser's, and each line keeps its own ending.
"""
from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


@dataclass
class PySource:
    text: str  # decoded, without a BOM
    encoding: str  # codec that writes it back byte for byte ("utf-8-sig" keeps a BOM)
    newline: str  # the file's most common line ending, for lines docgen adds

    def lines(self) -> list[str]:
        """Lines with their own endings; ''.join(lines()) == text."""
        return split_lines(self.text)


def split_lines(text: str) -> list[str]:
    return _LINE.findall(text)


def read_source(data: bytes) -> PySource:
    """Decode a source file as Python would; ValueError says why it cannot be edited safely."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        raise ValueError(f"its encoding declaration is not usable ({exc.msg})") from None
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ValueError(f"it is not valid {encoding} ({exc})") from None
    if text.encode(encoding) != data:
        raise ValueError(f"its bytes do not survive a {encoding} round trip, so rewriting it could change them")
    counts = {nl: 0 for nl in ("\r\n", "\n", "\r")}
    for line in split_lines(text):
        for nl in counts:
            if line.endswith(nl):
                counts[nl] += 1
                break
    newline = max(counts, key=lambda nl: (counts[nl], nl == "\n"))
    return PySource(text=text, encoding=encoding, newline=newline)


def byte_col_to_char(line: str, col: int) -> int:
    """ast column offsets count UTF-8 bytes; the index into the str line."""
    return len(line.encode("utf-8")[:col].decode("utf-8", "ignore"))
