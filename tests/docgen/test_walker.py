"""Walking: .gitignore, --exclude, vendored folders, and every kind of bad input, each skip counted."""
import pytest

from app.docgen.gitignore import parse_rules, GitIgnore
from app.docgen.planner import make_plan
from app.docgen.walker import WalkConfig, walk
from tests.docgen.conftest import run_fake, write


def test_gitignore_rules():
    g = GitIgnore()
    g.rules.extend(parse_rules("*.log\n/build_out/\nsecret/**\n!keep.log\ndocs/*.py\n", ""))
    assert g.ignored("a.log", False) and g.ignored("sub/a.log", False)
    assert not g.ignored("keep.log", False)
    assert g.ignored("build_out", True) and not g.ignored("x/build_out", True)
    assert g.ignored("secret/a/b.py", False)
    assert g.ignored("docs/x.py", False) and not g.ignored("docs/sub/x.py", False)
    nested = GitIgnore()
    nested.rules.extend(parse_rules("gen.py\n", "pkg"))
    assert nested.ignored("pkg/gen.py", False) and not nested.ignored("gen.py", False)


def test_walk_skips_with_reasons(tmp_path):
    write(tmp_path, {
        ".gitignore": "ignored.py\ntmp/\n",
        "ok.py": "def f():\n    return 1\n",
        "ignored.py": "x = 1\n",
        "tmp/a.py": "x = 1\n",
        "node_modules/lib.js": "function f() {}\n",
        "skipme/a.py": "x = 1\n",
        "notes.txt": "hello\n",
        "blob.c": b"int x;\0\0\0binary",
        "latin.py": "s = '\xe9'\n".encode("latin-1"),
        "big.js": "// @generated\n" + "var a = 1;\n" * 10,
        "huge.py": "x = 1\n" * 900_000,  # ~5 MB
        "empty.py": "",
        "types_pb2.py": "x = 1\n",
    })
    res = walk(tmp_path, WalkConfig(exclude=["skipme"]))
    assert [f.rel for f in res.files] == ["ok.py"]
    reasons = dict(res.skipped_files)
    assert reasons["ignored.py"] == "ignored by .gitignore"
    assert reasons["tmp/"] == "ignored by .gitignore"
    assert reasons["node_modules/"] == "vendored, generated or tool folder"
    assert reasons["skipme/"] == "excluded by --exclude"
    assert reasons["notes.txt"] == "not a supported language"
    assert reasons["blob.c"] == "binary file"
    assert reasons["latin.py"] == "not valid UTF-8"
    assert reasons["big.js"] == "generated file (header says so)"
    assert reasons["huge.py"].startswith("larger than")
    assert reasons["empty.py"] == "empty file"
    assert reasons["types_pb2.py"] == "generated or minified file"
    assert sum(res.skipped.values()) == len(res.skipped_files)


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
    write(tmp_path, {"a.py": "def f():\n    pass\n", "b.py": "x = 1\n"})
    real = type(tmp_path).read_bytes

    def read_bytes(self):  # chmod 000 does not stop root, so refuse the read the way the OS would
        if self.name == "b.py":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(type(tmp_path), "read_bytes", read_bytes)
    res = walk(tmp_path)
    assert dict(res.skipped_files)["b.py"] == "unreadable (PermissionError)"
    assert [f.rel for f in res.files] == ["a.py"]


def test_languages_filter_and_bad_name(tmp_path):
    write(tmp_path, {"a.py": "x = 1\n", "b.go": "package b\n", "c.ts": "let x = 1;\n"})
    from app.docgen.languages import parse_languages
    res = walk(tmp_path, WalkConfig(languages=parse_languages(["go,ts"])))
    assert sorted(f.rel for f in res.files) == ["b.go", "c.ts"]
    with pytest.raises(ValueError, match="choose from"):
        parse_languages(["cobol"])


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        walk(tmp_path / "nope")


def test_bad_inputs_run_completes(tmp_path):
    """Empty dir and a tree of bad files: each skipped or chunked with a reason, the run completes."""
    empty = tmp_path / "empty"
    empty.mkdir()
    out, _ = run_fake(empty)
    assert out.report.chunks == 0 and out.report.files == 0
    bad = write(tmp_path / "bad", {
        "good.py": "def f(a):\n    return a\n",
        "syntax.py": "def ok(a):\n    return a\n\ndef broken(:\n    pass\n",
        "latin.py": "s = '\xe9'\n".encode("latin-1"),
        "bin.py": b"\0\1\2",
        "gen.js": "x;\n" * 2_000_000,
    })
    out, gen = run_fake(bad)
    rep = out.report
    assert rep.skipped == {"not valid UTF-8": 1, "binary file": 1, "larger than 1000 kB": 1}
    assert rep.parse_error_files == ["syntax.py"]
    assert rep.errors == {} and rep.completeness == 1.0
    plan = make_plan(bad)
    assert {"good.py::f", "syntax.py::ok"} <= {u.uid for u in plan.units}
    assert gen.calls == rep.chunks
