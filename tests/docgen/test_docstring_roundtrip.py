"""--write round trips: any generated text comes back as the docstring (modulo `normalize_doc`),
and the file keeps its encoding, BOM, line endings and form feeds; a bad docstring drops only itself."""
import ast
import difflib
import random

import pytest

from app.cli import main
from app.docgen.chunker import chunk_source
from app.docgen.writers import docstrings as D
from app.docgen.writers.docstrings import write_docstrings
from app.docgen.writers.pyliteral import format_docstring, literal_value, normalize_doc
from tests.docgen.conftest import git_init, write

ATOMS = ['"', '""', '"""', "'", "'''", "\\", "\\\\", "\\N{BULLET}", "\\n", "\\x", "\\u12", "\ud800", "\udfff",
         "\r\n", "\r", "\n", "\n\n", "\t", "\x0c", "\x0b", "\x00", "\x1b", "\x85", "\u2028", "\ufeff", "é", "€",
         "\U0001f600", " ", "   ", "# not a comment", "def f():", "{x}", "%s", "text", "Line.", "    indented"]
LAYOUT = '''{cookie}import os
X = 1


def f(a):
    return a


class C:
    def m(self):
        return 2

    async def am(self): return 3


def one(x): return x  # trailing comment
'''
QUALS = ("<module>", "f", "C", "C.m", "C.am", "one")


def nasty(rng: random.Random) -> str:
    return "".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 12)))


def docs_of(data: bytes) -> dict[str, str]:
    """qualname -> raw docstring value, parsing the bytes as Python does (cookie, BOM)."""
    tree = ast.parse(data)
    return {q: n.body[0].value.value for q, n in D._named_defs(tree).items() if D._has_doc(n)}


def only_insertions(old: bytes, new: bytes) -> bool:
    ops = difflib.SequenceMatcher(None, old.splitlines(True), new.splitlines(True), autojunk=False).get_opcodes()
    return all(tag in ("equal", "insert") for tag, *_ in ops)


def run_write(tmp_path, name: str, data: bytes, docs: dict[str, str], **kw):
    (tmp_path / name).write_bytes(data)
    rep = write_docstrings(tmp_path, {name: docs}, "write", force=True, **kw)
    return rep, (tmp_path / name).read_bytes()


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "ascii"])
def test_nasty_text_round_trips_everywhere(tmp_path, encoding):
    """Property-style: random mixes of quotes, backslashes, escapes, controls, surrogates, newlines."""
    rng = random.Random(encoding)
    cookie = "" if encoding == "utf-8" else f"# -*- coding: {encoding} -*-\n"
    original = LAYOUT.format(cookie=cookie).encode(encoding)
    for i in range(60):
        texts = {q: nasty(rng) for q in QUALS}
        rep, data = run_write(tmp_path, f"m{i}.py", original, texts)
        wanted = {q: t for q, t in texts.items() if normalize_doc(t)}
        assert not rep.refused and all("empty" in why for _, why in rep.skipped), (texts, rep)
        got = docs_of(data)
        assert set(got) == set(wanted), texts
        for q, t in wanted.items():
            assert normalize_doc(got[q]) == normalize_doc(t), (q, t, got[q])
        data.decode(encoding)  # still in its declared encoding
        stripped = D.strip_docstrings(ast.parse(data))
        assert stripped == D.strip_docstrings(ast.parse(original))
        # and the cache keys do not see what was written (item 5)
        keys = [{u.qualname: u.stable_code for u in chunk_source("m.py", "python", d.decode(encoding)).units}
                for d in (original, data)]
        assert keys[0] == keys[1], texts
        # replacing them (--overwrite) round-trips as well
        again = {q: nasty(rng) for q in QUALS}
        rep, data2 = run_write(tmp_path, f"m{i}.py", data, again, overwrite=True)
        assert not rep.refused and all("empty" in why for _, why in rep.skipped), (again, rep)
        got2 = docs_of(data2)
        for q, t in again.items():
            if normalize_doc(t):
                assert normalize_doc(got2[q]) == normalize_doc(t), (q, t, got2[q])
        assert D.strip_docstrings(ast.parse(data2)) == D.strip_docstrings(ast.parse(original))


def test_format_docstring_literal_by_itself():
    rng = random.Random(7)
    for _ in range(500):
        text = nasty(rng)
        lines = format_docstring(text, "    ")
        if not normalize_doc(text):
            continue
        assert normalize_doc(literal_value(lines)) == normalize_doc(text), text


def test_normalisation_is_what_help_shows():
    assert normalize_doc("  First.\r\n\r\n      body\t \r  more\ud800 ") == "First.\n\n    body\nmore\ufffd"
    assert normalize_doc('ends with """') == 'ends with """'


def test_crlf_file_stays_crlf(tmp_path):
    old = b"import os\r\n\r\ndef f(x):\r\n    return x\r\n\r\nclass C:\r\n    pass\r\n"
    rep, new = run_write(tmp_path, "a.py", old, {"<module>": "Mod.\n\nMore.", "f": "F.\n\nArgs:\n  x: y", "C": "C."})
    assert rep.written == ["a.py"] and rep.inserted == 3
    assert b"\n" not in new.replace(b"\r\n", b"") and only_insertions(old, new)
    assert docs_of(new) == {"<module>": "Mod.\n\nMore.\n", "f": "F.\n\n    Args:\n      x: y\n    ", "C": "C."}


def test_latin1_file_written_in_latin1(tmp_path):
    old = "# -*- coding: latin-1 -*-\n# café\ndef f(x):\n    return 'é'\n".encode("latin-1")
    rep, new = run_write(tmp_path, "a.py", old, {"f": "Café costs 3 € 😀."})
    assert rep.written == ["a.py"] and only_insertions(old, new)
    assert b"Caf\xe9 costs 3 \\u20ac \\U0001f600." in new  # é as a latin-1 byte, the rest as escapes
    assert docs_of(new)["f"] == "Café costs 3 € 😀."


def test_bom_kept(tmp_path):
    old = b"\xef\xbb\xbf# a comment\ndef f(x):\n    return x\n"
    rep, new = run_write(tmp_path, "a.py", old, {"<module>": "Mod é.", "f": "F."})
    assert rep.written == ["a.py"] and new.startswith(b"\xef\xbb\xbf# a comment\n") and only_insertions(old, new)
    assert docs_of(new) == {"<module>": "Mod é.", "f": "F."}


def test_form_feeds_between_functions(tmp_path):
    old = (b"def g():\n    return 1\n\x0c\n\x0cdef f(x):\n\x0c    y = x\n    return y\n\n"
           b"class C:\n\x0c    def m(self):\n        pass\n")
    rep, new = run_write(tmp_path, "a.py", old, {"g": "G.", "f": "F.", "C": "C.", "C.m": "M."})
    assert rep.written == ["a.py"] and not rep.skipped and only_insertions(old, new)
    assert docs_of(new) == {"g": "G.", "f": "F.", "C": "C.", "C.m": "M."}
    assert new.count(b"\x0c") == old.count(b"\x0c")


@pytest.mark.parametrize("src, qual, expected", [
    ("def f(x): return x\n", "f", 'def f(x):\n    """Doc."""\n    return x\n'),
    ("def f(x): a = x; return a  # c\n", "f", 'def f(x):\n    """Doc."""\n    a = x; return a  # c\n'),
    ("class C: pass\n", "C", 'class C:\n    """Doc."""\n    pass\n'),
    ("class C:\n    @staticmethod\n    def m(): ...\n", "C.m",
     'class C:\n    @staticmethod\n    def m():\n        """Doc."""\n        ...\n'),
    ("if True:\n\tdef f(): return 1\n", "f", None),  # not a unit (inside an if): reported, not written
    ("def f(\n    x,\n): return (x +\n    1)\n", "f", 'def f(\n    x,\n):\n    """Doc."""\n    return (x +\n    1)\n'),
    ("async def f(x): return x", "f", 'async def f(x):\n    """Doc."""\n    return x'),
])
def test_one_line_definitions_are_split(tmp_path, src, qual, expected):
    rep, new = run_write(tmp_path, "a.py", src.encode(), {qual: "Doc."})
    if expected is None:
        assert rep.skipped and "not found" in rep.skipped[0][1] and new == src.encode()
        return
    assert new.decode() == expected and rep.inserted == 1 and not rep.skipped


def test_class_and_its_one_line_method_on_one_line(tmp_path):
    old = b"class C:\n    def m(self): return 1\n"
    rep, new = run_write(tmp_path, "a.py", old, {"C": "Class.", "C.m": "Method."})
    assert new == b'class C:\n    """Class."""\n    def m(self):\n        """Method."""\n        return 1\n'


@pytest.mark.parametrize("src, expected", [
    ('def f(): "old"; return 1\n', 'def f():\n    """New."""\n    return 1\n'),
    ('def f():\n    """old"""  # keep me\n    return 1\n', 'def f():\n    """New."""  # keep me\n    return 1\n'),
    ("def f():\n    '''old\n    more'''\n    return 1", 'def f():\n    """New."""\n    return 1'),
])
def test_overwrite_replaces_only_the_docstring(tmp_path, src, expected):
    rep, new = run_write(tmp_path, "a.py", src.encode(), {"f": "New."}, overwrite=True)
    assert new.decode() == expected and rep.replaced == 1


def test_a_bad_docstring_drops_only_itself(tmp_path, monkeypatch):
    real = D.format_docstring

    def broken_for_marker(text, indent, encoding="utf-8"):  # a writer bug for one text only
        return [indent + '"""unterminated'] if "MARKER" in text else real(text, indent, encoding)

    monkeypatch.setattr(D, "format_docstring", broken_for_marker)
    old = b"def a():\n    return 1\n\n\ndef b():\n    return 2\n"
    rep, new = run_write(tmp_path, "a.py", old, {"a": "A.", "b": "MARKER"})
    assert rep.written == ["a.py"] and rep.failed
    assert docs_of(new) == {"a": "A."}
    assert [uid for uid, _ in rep.skipped] == ["a.py::b"] and "not written" in rep.skipped[0][1]


def test_unreadable_file_refused_others_written(tmp_path):
    write(tmp_path, {"ok.py": "def f():\n    return 1\n"})
    (tmp_path / "bad.py").write_bytes(b"# coding: utf-8\ndef f():\n    return '\xff'\n")
    rep = write_docstrings(tmp_path, {"bad.py": {"f": "F."}, "ok.py": {"f": "F."}}, "write", force=True)
    assert rep.written == ["ok.py"] and "not valid utf-8" in rep.refused["bad.py"] and rep.failed


def test_refused_writes_exit_nonzero_and_are_listed(tmp_path, capsys):
    root = write(tmp_path / "r", {"a.py": "def f(x): return x\n", "b.py": "def g():\n    return 1\n"})
    git_init(root)
    (root / "b.py").write_text("def g():\n    return 2\n")  # uncommitted: refused
    assert main(["run", str(root), "--generator", "fake", "--plain", "--write"]) == 1
    out = capsys.readouterr().out
    assert "refused b.py (nothing written): has uncommitted changes" in out
    assert '"""Handles `f`' in (root / "a.py").read_text()
    git_init(root)  # commit everything: nothing is refused and the run succeeds
    assert main(["run", str(root), "--generator", "fake", "--plain", "--write"]) == 0


def test_docstring_goes_above_leading_body_comments(tmp_path):
    old = (b"def f(\n    a,  # arg\n):\n    # explains the body\n\n    return a\n\n\n"
           b"def g(a):\n    # type: (int) -> int\n    return a\n")
    rep, new = run_write(tmp_path, "a.py", old, {"f": "F.", "g": "G."})
    assert new == (b'def f(\n    a,  # arg\n):\n    """F."""\n    # explains the body\n\n    return a\n\n\n'
                   b'def g(a):\n    # type: (int) -> int\n    """G."""\n    return a\n')


def test_lone_surrogate_from_the_model_is_stored_and_written(tmp_path):
    from app.docgen.fake_generator import FakeDocGenerator
    from app.docgen.store import Store
    from tests.docgen.conftest import run_fake

    class Surrogates(FakeDocGenerator):
        def _text(self, chunk):
            return "Bad \ud800 char \udfff.\n\nMore."

    root = write(tmp_path / "r", {"a.py": "def f(x):\n    return x\n"})
    git_init(root)
    out, _ = run_fake(root, Surrogates(), write_mode="write")
    assert out.docstrings.written == ["a.py"] and not out.docstrings.failed
    assert docs_of((root / "a.py").read_bytes())["f"].startswith("Bad \ufffd char \ufffd.")
    store = Store(root / ".docgen" / "docgen.sqlite")
    try:
        texts = [r[0] for r in store.db.execute("SELECT text FROM results")]
    finally:
        store.close()
    assert texts and all("\ufffd" in t for t in texts)
    assert "\ufffd" in (root / "docs" / "a.py.md").read_text(encoding="utf-8")


def test_latin1_source_documented_end_to_end(tmp_path):
    """A latin-1 file with non-ASCII bytes is read by its declaration (not skipped) and written back in latin-1."""
    from tests.docgen.conftest import run_fake

    old = "# -*- coding: latin-1 -*-\n# Grüße\ndef f(x):\n    return 'é' + x\n".encode("latin-1")
    root = tmp_path / "r"
    root.mkdir()
    (root / "a.py").write_bytes(old)
    git_init(root)
    out, _ = run_fake(root, write_mode="write")
    assert out.docstrings.written == ["a.py"] and not out.docstrings.failed
    new = (root / "a.py").read_bytes()
    assert only_insertions(old, new) and new.decode("latin-1").startswith("# -*- coding: latin-1 -*-\n# Grüße\n")
    assert docs_of(new)["f"].startswith("Handles `f`")
