"""Markdown pages: escaped text, rendered doc tags, anchors and contents, cross-links, source
links, a Mermaid call graph, decorators on their own lines, parts, counts that add up."""
from __future__ import annotations

import re

from app.docgen.fake_generator import FakeDocGenerator
from app.docgen.writers.doctext import render_doc
from tests.docgen.conftest import run_fake, write

PY = (
    "import functools\n\n\n"
    "def leaf(x):\n    return x + 1\n\n\n"
    "@functools.lru_cache(maxsize=None)\n"
    "def mid(x):\n    return leaf(x) * 2\n\n\n"
    "def empty(y):\n    return y\n"
)
JAVA = """
public class Box {
  /**
   * Wraps a value.
   *
   * <p>See {@link java.util.Optional#of} and {@code Box.of(1)}.
   *
   * @param value the value to wrap
   * @return a new {@code Box}
   * @throws IllegalArgumentException when value is null
   */
  public static Box of(Object value) { return new Box(); }
}
"""


class _Texts(FakeDocGenerator):
    """Generated text with Markdown in it; `empty` gets an empty generation."""

    def _text(self, chunk):
        if chunk.name == "empty":
            return ""
        return "# Not a heading\nUses <T> and a_b_c.\n\nArgs:\n    x: the input\n        on two lines."


def _pages(tmp_path, files, **kw):
    root = write(tmp_path / "p", files)
    out, _ = run_fake(root, _Texts(max_seq_length=kw.get("max_seq_length", 4096)), **kw)
    return root / "docs", out


def test_generated_text_is_escaped_and_sections_rendered():
    lines = render_doc("# Not a heading\nUses <T> and a_b_c.\n\nArgs:\n    x: the input\n        on two lines.")
    assert lines[0] == "\\# Not a heading"
    assert "&lt;T&gt;" in lines[1] and "a\\_b\\_c" in lines[1]
    assert "| `x` |   | the input on two lines. |" in lines  # not an indented code block
    assert not any(line.startswith("    ") for line in lines)


def test_javadoc_and_jsdoc_tags_are_rendered():
    java = "\n".join(render_doc(JAVA.split("/**")[1].split("*/")[0].replace("   *", "").replace("  *", ""), "java"))
    assert "{@" not in java and "<p>" not in java and "@param" not in java
    assert "`java.util.Optional.of`" in java and "`Box.of(1)`" in java
    assert "| `value` |   | the value to wrap |" in java
    assert "**Returns**: a new `Box`" in java and "- IllegalArgumentException: when value is null" in java
    js = render_doc("Render `view`.\n\n@param {string} name the view name\n@return {Promise<string>} html")
    assert "| `name` | string | the view name |" in js
    assert "**Returns** (Promise&lt;string&gt;): html" in js


def test_page_structure_links_graph_and_counts(tmp_path):
    docs, out = _pages(tmp_path, {"m.py": PY, "Box.java": JAVA})
    page = (docs / "m.py.md").read_text()
    assert "\n# Not a heading" not in page and "\\# Not a heading" in page
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', page))
    contents = re.findall(r"^- \[[^\]]+\]\(#([^)]+)\)", page, flags=re.M)
    assert sorted(contents) == sorted(anchors) and len(anchors) == 3  # leaf, mid, empty
    assert "**Calls:** [`leaf`](#u-leaf)" in page and "**Called by:** [`mid`](#u-mid)" in page
    assert "[`m.py` lines 4\u20135](../m.py#L4-L5)" in page
    assert "```mermaid\nflowchart LR\n" in page and '["mid"]' in page and " --> " in page
    assert "@functools.lru_cache(maxsize=None)\ndef mid(x)" in page
    # An empty generation is not documentation, and flagged never exceeds documented.
    assert "## function `empty`" in page and "_Not documented" in page.split("## function `empty`")[1]
    index = (docs / "index.md").read_text()
    row = next(line for line in index.splitlines() if line.startswith("| [m.py]"))
    documented, total = map(int, row.split("|")[3].split("/"))
    flagged = int(row.split("|")[4])
    assert (documented, total) == (3, 4)  # module, leaf, mid; not the empty one
    assert flagged <= documented
    java = (docs / "Box.java.md").read_text()
    assert "| `value` |" in java and "{@link" not in java


def test_parts_of_a_long_unit_are_shown_on_its_page(tmp_path):
    body = "".join(f"    v{i} = x * {i} + {i}\n" for i in range(400))
    docs, out = _pages(tmp_path, {"big.py": f"def big(x):\n{body}    return v0\n"}, max_seq_length=1500,
                       max_new_tokens=128)
    page = (docs / "big.py.md").read_text()
    m = re.search(r"documented in (\d+) parts", page)
    assert m and int(m.group(1)) >= 3
    assert page.count("**Lines ") == int(m.group(1))


def test_rest_literal_blocks_directives_and_field_ends():
    text = ("Gather info.\n\n.. code-block:: python\n\n    with Context(cli) as ctx:\n        info = ctx.to_info_dict()\n\n"
            ":param show_default: Show the default.\n\n.. versionchanged:: 8.1\n    Overridden.\n\nExample::\n\n    x_y = 1\n")
    lines = render_doc(text)
    block = lines[lines.index("```python") + 1: lines.index("```python") + 4]
    assert block == ["with Context(cli) as ctx:", "    info = ctx.to_info_dict()", "```"]  # code kept as code
    assert "*Changed in version 8.1:*" in lines
    assert "| `show_default` |   | Show the default. |" in lines  # the directive is not glued to the param
    ex = lines.index("Example:")
    assert lines[ex + 1: ex + 5] == ["", "```", "x_y = 1", "```"]


def test_jsdoc_indented_examples_stay_code():
    text = "Send a response.\n\nExamples:\n\n    res.send('<p>some html</p>');\n    res.send({ a: 1 });\n\n" \
           "@param {string|Buffer} body\n@public"
    lines = render_doc(text, "javascript")
    start = lines.index("```")
    assert lines[start + 1: start + 4] == ["res.send('<p>some html</p>');", "res.send({ a: 1 });", "```"]
    assert "| `body` | string\\|Buffer |   |" in lines


def test_calls_resolve_within_a_language_only(tmp_path):
    docs, _ = _pages(tmp_path, {"args.go": "package cobra\n\nfunc NoArgs(args []string) int {\n\treturn len(args)\n}\n",
                                "m.rs": "pub struct Match;\n\nimpl Match {\n    pub fn len(&self) -> usize {\n        0\n    }\n}\n"})
    page = (docs / "args.go.md").read_text()
    assert "m.rs" not in page and "```mermaid" not in page


def test_long_signature_shown_as_laid_out_in_the_source():
    from app.docgen.chunker import chunk_source
    from app.docgen.writers.pagebits import display_signature

    src = ("@decorator(\n    option=1,\n)\ndef echo_via_pager(\n    text_or_generator: t.Union[t.Iterable[str], str],\n"
           "    color: t.Optional[bool] = None,\n    extra_long_parameter_name: int = 0,\n) -> None:\n    pass\n")
    unit = next(u for u in chunk_source("m.py", "python", src).units if u.name == "echo_via_pager")
    shown = display_signature(unit.signature, unit.code).splitlines()
    assert shown[-5:] == ["def echo_via_pager(", "    text_or_generator: t.Union[t.Iterable[str], str],",
                          "    color: t.Optional[bool] = None,", "    extra_long_parameter_name: int = 0,", ") -> None"]
    assert display_signature("def f(a)", "def f(a):\n    pass\n") == "def f(a)"  # short ones stay one line


def test_report_counts_add_up_with_empty_generations(tmp_path):
    from app.docgen.report import format_report

    _, out = _pages(tmp_path, {"m.py": PY})
    rep = out.report
    assert rep.empty == 1 and "m.py::empty" not in rep.flagged  # the empty one is not "flagged"
    documented = round(rep.completeness * rep.chunks)
    assert documented == rep.chunks - 1 and len(rep.flagged) <= documented
    text = format_report(rep)
    assert "(1 empty generations count as not documented)" in text
    assert f"of the {documented} documented chunks" in text
