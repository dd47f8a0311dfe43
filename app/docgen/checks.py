"""Checks on every generated doc: does it agree with the code it documents?

- parameters: every documented parameter is in the signature; with a parameter section, all are;
- returns/raises: a documented return value exists; documented exceptions appear in the code;
- identifiers: code-like names the text mentions exist somewhere in the repository;
- cut off: the text was not stopped by the token limit or left mid-sentence.
Recognised doc styles: Google, NumPy, Sphinx, JSDoc/Javadoc, and Rust-style `# Arguments`.
"""
from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass, field

from app.docgen.units import CALLABLE_KINDS, SourceUnit

IGNORED_PARAMS = {"self", "cls", "this"}


def undocumented_receivers(unit: SourceUnit) -> set[str]:
    """The implicit receiver a doc need not (but may) describe: a method's first `self`/`cls`.
    A module-level function's `cls` is an ordinary parameter."""
    if unit.params and unit.params[0] in IGNORED_PARAMS and unit.kind == "method":
        return {unit.params[0]}
    return {"this"} & set(unit.params)
COMMON_NAMES = set(dir(builtins)) | set(keyword.kwlist) | {
    "self", "cls", "this", "null", "nil", "true", "false", "void", "int", "str", "bool", "float", "dict",
    "list", "tuple", "set", "bytes", "string", "number", "boolean", "undefined", "Optional", "Any", "Union",
    "Callable", "Iterable", "Iterator", "Sequence", "Mapping", "Self", "usize", "u32", "i32", "u64", "i64",
    "f32", "f64", "u8", "Vec", "Option", "Result", "Ok", "Err", "Some", "String", "Promise", "Array",
    "Object", "Error", "Exception", "size_t", "char", "double", "long", "std", "e.g", "i.e", "etc",
}
_GOOGLE_PARAMS = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters)\s*:\s*$")
_GOOGLE_RAISES = re.compile(r"^(\s*)(Raises|Throws)\s*:\s*$")
_NUMPY_HEADER = re.compile(r"^([ \t]*)([A-Z][A-Za-z ]+?)[ \t]*\n[ \t]*-{3,}[ \t]*$", re.M)
_SPHINX_PARAM = re.compile(r":param\s+(?:[^:]*\s)?\*{0,2}(\w+)\s*:")
_TAG_PARAM = re.compile(r"@param\s+(?:\{[^}]*\}\s*)?\[?(\w+)")
_MD_ARG = re.compile(r"^\s*[*-]\s+`(\w+)`", re.M)
_RETURNS = re.compile(r"^\s*(Returns?|Yields?)\s*:|:returns?:|:rtype:|@returns?\b|^\s*#+\s*Returns\b"
                      r"|^\s*Returns\s*\n\s*-{3,}", re.M)
_SPHINX_RAISES = re.compile(r":raises?\s+([\w.]+)\s*:|@throws\s+\{?([\w.]+)|@exception\s+([\w.]+)")
_BACKTICK = re.compile(r"`([^`\n]+)`")
_CALLISH = re.compile(r"\b([A-Za-z_][\w.]*)\(\)")
_SNAKE = re.compile(r"(?<![\w.])([a-z][a-z0-9]*_[a-z0-9_]*[a-z0-9])(?![\w])")
_CAMEL = re.compile(r"(?<![\w.])([a-z]+[A-Z][A-Za-z0-9]*)(?![\w])")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DANGLING = re.compile(r"(,|:|\band|\bor|\bthe|\ba|\ban|\bof|\bto|\bwith|\bfor|\bwhich|\bthat)\s*$", re.I)


@dataclass
class CheckResult:
    failures: list[dict] = field(default_factory=list)  # {"cause": ..., "message": ...}
    named: int = 0  # code-like identifiers the text mentions
    found: int = 0  # ... of which exist in the repository

    def add(self, cause: str, message: str) -> None:
        self.failures.append({"cause": cause, "message": message})

    @property
    def ok(self) -> bool:
        return not self.failures


def _section_entries(lines: list[str], start: int, indent: int) -> list[str]:
    """Google style: entry names in the indented block after a section header."""
    names, entry_indent = [], None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        ind = len(line) - len(line.lstrip())
        if ind <= indent:
            break
        if entry_indent is None:
            entry_indent = ind
        if ind == entry_indent:
            m = re.match(r"\s*\*{0,2}([\w.]+)\s*(\([^)]*\))?\s*:", line)
            if m:
                names.append(m.group(1))
    return names


def _numpy_entries(text: str, header: str) -> list[str] | None:
    """NumPy style: entries at the header's indentation under `Header\n------`; None without that section."""
    for m in _NUMPY_HEADER.finditer(text):
        if m.group(2) != header:
            continue
        indent = len(m.group(1))
        lines = text[m.end():].splitlines()[1:]
        names = []
        for i, line in enumerate(lines):
            if i + 1 < len(lines) and re.match(r"^\s*-{3,}\s*$", lines[i + 1]):
                break  # the next section's header
            if not line.strip() or len(line) - len(line.lstrip()) != indent:
                continue
            em = re.match(r"^\*{0,2}(\w+)\s*(:.*)?$", line.strip())
            if em:
                names.append(em.group(1))
        return names
    return None


def documented_params(text: str) -> tuple[set[str], bool]:
    """(documented parameter names, whether the text has a parameter section at all)."""
    names: set[str] = set()
    has_section = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _GOOGLE_PARAMS.match(line)
        if m:
            has_section = True
            names.update(_section_entries(lines, i, len(m.group(1))))
    numpy = _numpy_entries(text, "Parameters")
    if numpy is not None:
        has_section = True
        names.update(numpy)
    for rx in (_SPHINX_PARAM, _TAG_PARAM):
        found = rx.findall(text)
        has_section = has_section or bool(found)
        names.update(found)
    if re.search(r"^\s*#+\s*(Arguments|Parameters)\b", text, re.M):
        has_section = True
        names.update(_MD_ARG.findall(text))
    return names, has_section


def documented_raises(text: str) -> set[str]:
    names: set[str] = set()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _GOOGLE_RAISES.match(line)
        if m:
            names.update(_section_entries(lines, i, len(m.group(1))))
    names.update(_numpy_entries(text, "Raises") or [])
    for groups in _SPHINX_RAISES.findall(text):
        names.update(g for g in groups if g)
    return {n.split(".")[-1] for n in names}


def named_identifiers(text: str) -> list[str]:
    """Code-like names in the text: `backticked`, called(), snake_case, camelCase (code fences skipped)."""
    text = re.sub(r"```.*?(```|$)", " ", text, flags=re.S)
    names: list[str] = []
    for span in _BACKTICK.findall(text):
        if re.search(r"['\"]|^\s*[\d\-+]", span):
            continue  # a literal, not a name
        names.extend(t for t in _IDENT.findall(span) if not t.isdigit())
    plain = _BACKTICK.sub(" ", text)
    for rx in (_CALLISH, _SNAKE, _CAMEL):
        for m in rx.findall(plain):
            names.extend(_IDENT.findall(m))
    return [n for n in dict.fromkeys(names) if n not in COMMON_NAMES and len(n) > 1]


def cut_off_reason(text: str, finish_reason: str) -> str:
    if finish_reason == "length":
        return "stopped at the token limit"
    stripped = text.rstrip()
    if not stripped:
        return "empty output"
    if stripped.count("```") % 2:
        return "unclosed code block"
    if stripped.count("(") > stripped.count(")"):
        return "unbalanced parentheses"
    if _DANGLING.search(stripped.splitlines()[-1].strip()):
        return "ends mid-sentence"
    return ""


def check_doc(unit: SourceUnit, text: str, finish_reason: str, known: set[str]) -> CheckResult:
    res = CheckResult()
    reason = cut_off_reason(text, finish_reason)
    if reason:
        res.add("cut_off", f"the text looks cut off ({reason})")
    if unit.kind in CALLABLE_KINDS:
        actual = {p.lstrip("*&") for p in unit.params}
        documented, has_section = documented_params(text)
        extra = sorted(documented - actual)
        actual -= undocumented_receivers(unit)
        if extra:
            res.add("params", f"documents {', '.join(extra)}, not parameters of {unit.signature or unit.name}"
                              f" (parameters: {', '.join(sorted(actual)) or 'none'})")
        missing = sorted(actual - documented) if has_section else []
        if missing:
            res.add("params", f"the parameter section leaves out {', '.join(missing)}")
        if _RETURNS.search(text) and not (unit.returns_value or unit.yields) and unit.name.split(".")[-1] != "__init__":
            res.add("returns", "documents a return value, but the code returns nothing")
        for exc in sorted(documented_raises(text)):
            if exc not in unit.raises and exc not in unit.code:
                res.add("raises", f"documents raising {exc}, which the code never raises")
    names = named_identifiers(text)
    missing_names = [n for n in names if n not in known]
    res.named, res.found = len(names), len(names) - len(missing_names)
    if missing_names:
        res.add("identifiers", f"names {', '.join(missing_names[:5])}, which do not exist in the repository")
    return res


def failure_feedback(failures: list[dict]) -> str:
    """The note a retry's prompt gets (through CodeChunk.context)."""
    lines = "\n".join(f"- {f['message']}" for f in failures)
    return ("A previous attempt at this documentation failed these checks; write it again and fix them:\n"
            + lines)


def repository_identifiers(texts: list[str]) -> set[str]:
    known: set[str] = set()
    for t in texts:
        known.update(_IDENT.findall(t))
    return known
