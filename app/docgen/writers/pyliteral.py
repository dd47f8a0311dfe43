"""Generated text as a Python docstring literal that reads back as the same text.

Whatever a model emits must become a `\"\"\"...\"\"\"` literal whose value, as `help()` and
`ast.get_docstring` show it (`inspect.cleandoc`), is the text up to `normalize_doc`:
  - lone surrogates (not encodable in any file) become U+FFFD;
  - `\\r\\n` and `\\r` become `\\n`;
  - the text is cleaned as `inspect.cleandoc` cleans it (common indentation after the first line,
    leading/trailing blank lines, tabs expanded), and each line loses trailing whitespace.
Everything else survives: backslashes (so `\\N{...}` and `\\n` stay literal text), any run of
quotes (also at the very end), control characters, and characters the file's encoding cannot
hold (written as `\\xNN`/`\\uNNNN`/`\\UNNNNNNNN` escapes, which Python reads back as the character).
"""
from __future__ import annotations

import ast
import inspect
import re
import textwrap

_SURROGATE = re.compile("[\ud800-\udfff]")
# Characters written as escapes: they would end the line, the literal or the file for the
# tokenizer (NUL, CR, \x0b, \x0c, \x1c-\x1e, \x85, \u2028/9 split lines in some tools), or are invisible.
_ESCAPE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def clean_text(text: str) -> str:
    """The text docgen means to write: surrogates replaced, newlines unified, outer blank space gone."""
    text = _SURROGATE.sub("\ufffd", text).replace("\r\n", "\n").replace("\r", "\n")
    return text.strip()


def normalize_doc(text: str) -> str:
    """What a docstring with this value shows after cleaning (the round-trip comparison)."""
    cleaned = inspect.cleandoc(clean_text(text))
    return "\n".join(line.rstrip() for line in cleaned.split("\n")).strip()


def _escape_char(ch: str) -> str:
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _escape_line(line: str, encoding: str) -> str:
    line = line.replace("\\", "\\\\")
    line = _ESCAPE.sub(lambda m: _escape_char(m.group()), line)
    line = re.sub(r'"(?=")', r'\\"', line)  # no two quotes in a row can close the literal
    if encoding.replace("_", "-").lower() not in ("utf-8", "utf-8-sig", "utf8"):
        line = "".join(ch if _encodable(ch, encoding) else _escape_char(ch) for ch in line)
    return line


def _encodable(ch: str, encoding: str) -> bool:
    try:
        ch.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def format_docstring(text: str, indent: str, encoding: str = "utf-8") -> list[str]:
    """Source lines (no line endings) of a docstring statement at `indent`; [] for empty text."""
    text = clean_text(text)
    if not text:
        return []
    first, _, rest = text.partition("\n")
    first = _escape_line(first.strip(), encoding)
    if not rest.strip():
        return [f'{indent}"""{_quote_safe_end(first)}"""']
    body = [_escape_line(ln, encoding).rstrip() for ln in textwrap.dedent(rest.expandtabs()).split("\n")]
    # The closing quotes get their own line, so only the one-line form needs its end guarded.
    return [f'{indent}"""{first}'] + [f"{indent}{ln}" if ln else "" for ln in body] + [f'{indent}"""']


def _quote_safe_end(line: str) -> str:
    """Escape a final quote (one not already escaped: an even run of backslashes before it)."""
    if not line.endswith('"'):
        return line
    slashes = len(line[:-1]) - len(line[:-1].rstrip("\\"))
    return line[:-1] + '\\"' if slashes % 2 == 0 else line


def literal_value(lines: list[str]) -> str | None:
    """The string a docstring statement's lines evaluate to (None when they do not parse as one)."""
    try:
        value = ast.literal_eval("\n".join(lines).strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, str) else None
