"""Doc text to Markdown: the tags of each language rendered, everything else escaped.

Generated text and docs from the source are not Markdown: a line starting with `#` must not
become a heading, `<T>` must not vanish as HTML, four-space-indented `Args:` entries must not
become code blocks. So text is parsed into a description and tagged entries (Javadoc/JSDoc
`@param`, `@return`, `@throws`; Python `Args:`/`Returns:`/`Raises:` and `:param x:`), the
description escaped line by line (code spans kept), and entries rendered as tables. Rust doc
comments are Markdown by convention and pass through unescaped.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

_INLINE_TAG = re.compile(r"\{@(link|linkplain|code|literal|value)\s+([^{}]*)\}")
_HTML_INLINE = [(re.compile(r"</?(b|strong|i|em|u|tt)>", re.I), "")]  # emphasis dropped, the text kept
_CODE_TAG = re.compile(r"<code>(.*?)</code>", re.I | re.S)
_PARAGRAPH_TAG = re.compile(r"</?p\s*/?>|<br\s*/?>", re.I)
_LIST_ITEM = re.compile(r"<li>\s*", re.I)
_LIST_TAGS = re.compile(r"</?(ul|ol)>|</li>", re.I)
_BLOCK_TAG = re.compile(r"^@(param|arg|argument|return|returns|throws|exception|raises|since|see|deprecated|"
                        r"author|version|example|type|typedef|property|prop|api|public|private|protected|"
                        r"internal|callback|template|yields?|default)\b\s*(.*)$")
_PY_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters|"
                         r"Returns|Return|Yields|Raises|Throws|Attributes)\s*:\s*$")
_NUMPY_RULE = re.compile(r"^-{3,}\s*$")
_SPHINX_FIELD = re.compile(r"^:(param|parameter|arg|type|returns?|rtype|raises?|except|exception)\s*([^:]*):\s*(.*)$")
_PY_ENTRY = re.compile(r"^([*\w.]+)\s*(\(([^)]*)\))?\s*:\s*(.*)$")
# Block syntax a line may not start with: headings, quotes, setext/rule lines, tables. Lists stay lists.
_MD_LINE_START = re.compile(r"^(\s*)(#|>|=+\s*$|-{3,}\s*$|\|)")
_SPHINX_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|exc|attr|obj|mod|data|const|ref|doc)+:`~?([^`]+)`")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_PARAM_KINDS = {"param", "arg", "argument", "parameter", "property", "prop"}
_RETURN_KINDS = {"return", "returns", "rtype", "yield", "yields"}
_RAISE_KINDS = {"throws", "exception", "raises", "raise", "except"}
_SECTION_KIND = {"args": "param", "arguments": "param", "parameters": "param", "params": "param",
                 "keyword args": "param", "keyword arguments": "param", "other parameters": "param",
                 "attributes": "attribute", "returns": "return", "return": "return", "yields": "yield",
                 "raises": "raises", "throws": "raises"}


@dataclass
class Entry:
    kind: str  # param | return | raises | attribute | other tag name
    name: str = ""
    type: str = ""
    text: str = ""


@dataclass
class ParsedDoc:
    description: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)


def escape_inline(text: str) -> str:
    """Escape Markdown/HTML syntax in running text, keeping `code spans` as they are."""
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(text):
        out.append(_escape_plain(text[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(_escape_plain(text[pos:]))
    return "".join(out)


def _escape_plain(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([*_\[\]|`])", r"\\\1", text)


def escape_line(line: str) -> str:
    """One line of text: inline escapes, and a backslash before anything that would start a block."""
    esc = escape_inline(line.strip())
    m = _MD_LINE_START.match(esc)
    if m:
        esc = esc[: m.end(1)] + "\\" + esc[m.end(1):]
    return esc


def _inline_tags(text: str) -> str:
    """Javadoc/JSDoc inline tags and simple HTML to Markdown-safe text with `code` spans."""
    def tag(m: re.Match) -> str:
        kind, body = m.group(1), m.group(2).strip()
        if kind in ("link", "linkplain"):
            target, _, label = body.partition(" ")
            return f"`{label.strip() or target.replace('#', '.').lstrip('.')}`"
        return f"`{body}`"
    text = _INLINE_TAG.sub(tag, text)
    text = _CODE_TAG.sub(lambda m: f"`{m.group(1)}`", text)  # <code>x</code> is code in any language
    text = _SPHINX_ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    for pattern, mark in _HTML_INLINE:
        text = pattern.sub(mark, text)
    return text


def _html_blocks(text: str) -> str:
    text = _PARAGRAPH_TAG.sub("\n\n", text)
    text = _LIST_ITEM.sub("\n\u2022 ", text)  # a bullet character, rendered as text (not parsed as a list)
    return _LIST_TAGS.sub("\n", text)


def parse_doc(text: str, language: str = "") -> ParsedDoc:
    """Split a doc into description lines and tagged entries (all conventions at once). HTML is
    read as markup only in Javadoc; elsewhere `<p>` is text (often inside a code example)."""
    doc = ParsedDoc()
    text = _inline_tags(text.replace("\r\n", "\n"))
    if language == "java":
        text = _html_blocks(text)
    lines = textwrap.dedent(text).strip("\n").split("\n")
    section, current = None, None
    i = 0
    while i < len(lines):
        raw = lines[i]
        line = raw.strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        tag = _BLOCK_TAG.match(line)
        sphinx = _SPHINX_FIELD.match(line)
        sec = _PY_SECTION.match(line)
        if sec or (line and _NUMPY_RULE.match(nxt) and line.lower() in _SECTION_KIND):
            section = _SECTION_KIND[(sec.group(1) if sec else line).lower()]
            current = None
            i += 1 if sec else 2
            continue
        if tag:
            current = _tag_entry(tag.group(1), tag.group(2))
            doc.entries.append(current)
            section = "tag"
        elif sphinx:
            current = _sphinx_entry(sphinx, doc)
            section = "tag" if current is not None else section
        elif section in ("param", "attribute", "raises", "return", "yield") and line:
            indent = len(raw) - len(raw.lstrip())
            m = _PY_ENTRY.match(line)
            starts_entry = current is None or (m is not None and indent <= getattr(current, "indent", 0))
            if section in ("return", "yield") and current is not None:
                starts_entry = False
            if starts_entry:
                current = _section_entry(section, line, m)
                current.indent = indent  # type: ignore[attr-defined]
                doc.entries.append(current)
            else:
                current.text = (current.text + " " + line).strip()
        elif section == "tag" and line and current is not None and not line.startswith(".. "):
            current.text = (current.text + " " + line).strip()
        else:
            section = current = None  # a blank line or a directive ends a section or tag
            doc.description.append(raw)
        i += 1
    while doc.description and not doc.description[-1].strip():
        doc.description.pop()
    return doc


def _tag_entry(kind: str, rest: str) -> Entry:
    kind = kind.lower()
    typ = ""
    if rest.startswith("{"):
        close = rest.find("}")
        typ, rest = rest[1:close], rest[close + 1:].strip() if close > 0 else rest
    if kind in ("param", "arg", "argument", "property", "prop", "throws", "exception", "template"):
        name, _, text = rest.partition(" ")
        if kind in ("throws", "exception") and not typ:
            typ, name = name, ""
        return Entry("param" if kind in _PARAM_KINDS else "raises" if kind in _RAISE_KINDS else kind,
                     name.strip().lstrip("-"), typ, text.strip().lstrip("- "))
    if kind in _RETURN_KINDS:
        return Entry("return", "", typ, rest.strip())
    return Entry(kind, "", typ, rest.strip())


def _sphinx_entry(m: re.Match, doc: ParsedDoc) -> Entry | None:
    kind, name, text = m.group(1).lower(), m.group(2).strip(), m.group(3).strip()
    if kind == "type":  # :type x: int -> the type of an earlier :param x:
        for e in doc.entries:
            if e.kind == "param" and e.name == name:
                e.type = text
                return None
        return None
    if kind == "rtype":
        ret = next((e for e in doc.entries if e.kind == "return"), None)
        if ret is not None:
            ret.type = text
            return None
        entry = Entry("return", "", text, "")
    elif kind in _RETURN_KINDS:
        entry = Entry("return", "", "", text)
    elif kind in _RAISE_KINDS:
        entry = Entry("raises", "", name, text)
    else:
        parts = name.split()
        entry = Entry("param", parts[-1] if parts else "", " ".join(parts[:-1]), text)
    doc.entries.append(entry)
    return entry


def _section_entry(section: str, line: str, m: re.Match | None) -> Entry:
    if section in ("return", "yield"):
        typ, _, text = line.partition(":") if m and m.group(1) and " " not in m.group(1) else ("", "", line)
        return Entry("return", "", typ.strip() if text else "", (text or line).strip())
    if m is None:
        return Entry(section, "", "", line)
    if section == "raises":
        return Entry("raises", "", m.group(1), m.group(4))
    return Entry(section, m.group(1), m.group(3) or "", m.group(4))


def _cell(text: str) -> str:
    return escape_inline(" ".join(text.split())) or " "


_RST_VERSION = {"versionadded": "New in version {}.", "versionchanged": "Changed in version {}:",
                "deprecated": "Deprecated since version {}:"}
_RST_DIRECTIVE = re.compile(r"^\.\.\s+([\w-]+)::\s*(.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _description(lines: list[str]) -> list[str]:
    """Paragraphs of escaped lines. Code stays code: Markdown fences, `>>>` examples, and reST
    literal blocks (`.. code-block:: python`, a paragraph ending in `::`) become fenced blocks."""
    out: list[str] = []
    in_fence = in_doctest = False
    literal_base: int | None = None  # indent of the line that opened a reST literal block
    literal: list[str] = []

    def close_literal() -> None:
        out.extend(textwrap.dedent("\n".join(literal)).strip("\n").split("\n") + ["```", ""])
        literal.clear()

    for raw in lines:
        line = raw.strip()
        if literal_base is not None:
            if not line or _indent(raw) > literal_base:
                literal.append(raw.rstrip())
                continue
            close_literal()
            literal_base = None
        directive = _RST_DIRECTIVE.match(line)
        if line.startswith("```") and not in_doctest:
            in_fence = not in_fence
            out.append(line)
        elif in_fence:
            out.append(raw)
        elif line.startswith(">>>") and not in_doctest:
            in_doctest = True
            out += ["", "```python", line]
        elif in_doctest and line:
            out.append(line)
        else:
            if in_doctest:
                out += ["```"]
                in_doctest = False
            if directive and directive.group(1) in ("code-block", "code", "sourcecode"):
                out += ["", f"```{directive.group(2).strip().split()[0] if directive.group(2).strip() else ''}"]
                literal_base = _indent(raw)
            elif directive and directive.group(1) in _RST_VERSION:
                out.append("*" + escape_line(_RST_VERSION[directive.group(1)].format(directive.group(2))) + "*")
            elif line.endswith("::") and not directive:
                out += [escape_line(line[:-1]), "", "```"]
                literal_base = _indent(raw)
            elif line and _indent(raw) >= 4 and (not out or not out[-1]):
                # indented by four after a blank line: a code block (Markdown, JSDoc, Go doc comments)
                out.append("```")
                literal_base = 0
                literal.append(raw.rstrip())
            else:
                out.append(escape_line(line) if line else "")
    if literal_base is not None:
        close_literal()
    elif in_fence or in_doctest:
        out.append("```")
    return out


def _squeeze(lines: list[str]) -> list[str]:
    """No runs of blank lines, none at either end."""
    out: list[str] = []
    for line in lines:
        if line.strip() or (out and out[-1].strip()):
            out.append(line if line.strip() else "")
    while out and not out[-1]:
        out.pop()
    return out


def render_doc(text: str, language: str = "") -> list[str]:
    """Markdown lines for one doc (generated or from the source)."""
    if not text.strip():
        return []
    if language == "rust":  # rustdoc is Markdown already
        return textwrap.dedent(text).strip("\n").split("\n")
    doc = parse_doc(text, language)
    out = _description(doc.description)
    params = [e for e in doc.entries if e.kind in ("param", "attribute")]
    for kind, title in (("param", "Parameters"), ("attribute", "Attributes")):
        rows = [e for e in params if e.kind == kind]
        if rows:
            out += ["", f"**{title}**", "", "| name | type | description |", "|---|---|---|"]
            out += [f"| `{e.name.replace('`', '')}` | {_cell(e.type)} | {_cell(e.text)} |" for e in rows]
    for e in doc.entries:
        if e.kind == "return":
            typ = f" ({_cell(e.type)})" if e.type else ""
            out += ["", f"**Returns**{typ}: {_cell(e.text)}"]
    raises = [e for e in doc.entries if e.kind == "raises"]
    if raises:
        out += ["", "**Raises**", ""] + [f"- {_cell(e.type) if e.type else ''}{': ' if e.type and e.text else ''}"
                                         f"{_cell(e.text) if e.text else ''}" for e in raises]
    others = [e for e in doc.entries if e.kind not in ("param", "attribute", "return", "raises")]
    if others:
        out += [""] + [f"*@{e.kind}*{' ' + _cell(e.text) if e.text else ''}  " for e in others]
    return _squeeze(out)
