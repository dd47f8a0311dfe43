"""Cache keys ignore docgen's own docstrings: `--write`, commit, rerun regenerates nothing."""
import ast
import shutil

from app.docgen.chunker import chunk_source
from app.docgen.fake_generator import FakeDocGenerator
from app.docgen.writers.docstrings import strip_docstrings
from tests.docgen.conftest import DEMO, git_init, run_fake, write

EXTRA = '''import functools


def one(x): return x + 1  # a one-line function


class Empty(Exception): pass


class Shape:
    """A human docstring stays."""

    kind = "shape"

    @functools.cache
    def area(self): return 0

    class Inner:
        def f(self):
            return 1


def long_one(x):
''' + "".join(f"    v{i} = x * {i} + one(x)\n" for i in range(300)) + "    return v0\n"


def _repo(tmp_path):
    root = tmp_path / "r"
    shutil.copytree(DEMO, root)
    write(root, {"extra.py": EXTRA})
    (root / "crlf.py").write_bytes(b"def c(a):\r\n    return a\r\n\x0c\r\nclass K:\r\n    def m(self): return 2\r\n")
    git_init(root)
    return root


def test_rerun_after_write_generates_nothing(tmp_path):
    root = _repo(tmp_path)
    kw = dict(max_seq_length=1500, max_new_tokens=128)
    out, gen = run_fake(root, FakeDocGenerator(max_seq_length=1500), write_mode="write", **kw)
    assert gen.calls > 20 and not out.docstrings.failed, out.report.outputs
    written = set(out.docstrings.written)
    assert {"extra.py", "crlf.py", "geometry/measure.py"} <= written
    assert '"""Handles `long_one`' in (root / "extra.py").read_text()
    git_init(root)  # the user commits the docstrings

    out2, gen2 = run_fake(root, FakeDocGenerator(max_seq_length=1500), **kw)
    assert gen2.calls == 0, gen2.generated
    assert out2.report.errors == {}

    # a real change still regenerates: the edited function (its summary line is unchanged, so no caller)
    p = root / "extra.py"
    p.write_text(p.read_text().replace("def one(x):\n", "def one(x):\n    x = -x\n", 1))
    gen3 = FakeDocGenerator(max_seq_length=1500)
    seen = []
    real = gen3._result
    gen3._result = lambda c: (seen.append(c.name), real(c))[1]
    run_fake(root, gen3, **kw)
    assert seen == ["one"]


def _units(rel, language, text):
    return {u.qualname: u for u in chunk_source(rel, language, text).units}


def test_key_forms_before_and_after_match_python():
    before = _units("x.py", "python", EXTRA)
    edits = [  # what --write does: docstrings inserted, one-line definitions split
        ("def one(x): return x + 1  # a one-line function",
         'def one(x):\n    """Adds one.\n\n    More "quoted" text.\n    """\n    return x + 1  # a one-line function'),
        ("class Empty(Exception): pass", 'class Empty(Exception):\n    "E."\n    pass'),
        ("    def area(self): return 0", '    def area(self):\n        """Zero."""\n        return 0'),
        ("        def f(self):\n", '        """In."""\n        def f(self):\n            """F."""\n'),
    ]
    after_src = EXTRA
    for old, new in edits:
        after_src = after_src.replace(old, new)
    after_src = '"""Module doc."""\n' + after_src
    after = _units("x.py", "python", after_src)
    assert before.keys() == after.keys()
    for q in before:
        assert before[q].stable_code == after[q].stable_code, q
        if q != "<module>":
            assert before[q].code != after[q].code or q in ("long_one",)  # the docstrings are in the prompt
    # the key form only drops docstrings and layout: the reference is Python's own AST without docstrings
    for q in ("one", "Empty", "long_one"):
        assert strip_docstrings(ast.parse(after[q].stable_code)) == strip_docstrings(ast.parse(after[q].code))
    # any other edit changes the key
    changed = _units("x.py", "python", EXTRA.replace("kind = \"shape\"", "kind = \"box\""))
    assert changed["Shape"].stable_code != before["Shape"].stable_code
    assert changed["<module>"].stable_code != before["<module>"].stable_code
    assert changed["one"].stable_code == before["one"].stable_code
    commented = _units("x.py", "python",
                       EXTRA.replace("def one(x): return x + 1", "def one(x):  # why\n    return x + 1"))
    assert commented["one"].stable_code != before["one"].stable_code


def test_key_forms_ignore_doc_comments_js():
    src = "// header\n\nclass A {\n  /** Adds. */\n  add(x) { return x + 1; }\n\n  sub(x) { return x - 1; }\n}\n"
    doc = src.replace("  sub(x)", "  /**\n   * Subtracts. */\n  sub(x)").replace("// header", "// new header")
    before, after = _units("a.js", "javascript", src), _units("a.js", "javascript", doc)
    for q in before:
        assert before[q].stable_code == after[q].stable_code, q
    assert after["A"].code != before["A"].code  # the prompt still shows the comments
    renamed = _units("a.js", "javascript", src.replace("sub(x)", "sub(y)"))
    assert renamed["A"].stable_code != before["A"].stable_code


def test_plain_rerun_generates_nothing_with_cycles(tmp_path):
    """A class and its methods form a cycle (one wave): a reused result must not leak into the
    context of a later unit of the same wave, or every second run regenerates those units."""
    root = _repo(tmp_path)
    run_fake(root, max_seq_length=1500, max_new_tokens=128)
    _, gen = run_fake(root, max_seq_length=1500, max_new_tokens=128)
    assert gen.calls == 0, gen.generated


def test_dependency_graph_is_the_same_in_every_process(tmp_path):
    """`pkg/__init__.py` and its `.pyi` stub name one module: the choice must not follow set order
    (it did, so reruns in a new process changed contexts and regenerated)."""
    import json
    import os
    import subprocess
    import sys

    from tests.docgen.conftest import REPO

    files = {"pkg/__init__.py": "from pkg.impl import helper\n\n\ndef api(x):\n    return helper(x)\n",
             "pkg/__init__.pyi": "def api(x: int) -> int: ...\n",
             "pkg/impl.py": "def helper(x):\n    return x\n",
             "use.py": "import pkg\n\n\ndef go():\n    return pkg.api(1)\n"}
    root = write(tmp_path / "p", files)
    code = ("import json, sys\nfrom app.docgen.planner import make_plan\n"
            f"p = make_plan({str(root)!r})\n"
            "print(json.dumps({k: sorted(v) for k, v in p.schedule.deps.items()}, sort_keys=True))\n")
    outs = set()
    for seed in ("1", "6", "7"):  # 6 and 7 picked the stub before the fix (CPython 3.11)
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        outs.add(res.stdout)
    assert len(outs) == 1
    assert json.loads(outs.pop())["use.py::go"] == ["pkg/__init__.py::api"]  # the implementation, not the stub


def test_signature_ends_at_the_colon():
    src = "def f(a,\n      b):  # why\n    # leading comment\n    return a\n\n\nclass K(object):  # base\n    # c\n    x = 1\n"
    units = _units("s.py", "python", src)
    assert units["f"].signature == "def f(a, b)" and units["K"].signature == "class K(object)"


def test_unit_that_fits_only_without_docstrings_is_not_split():
    from app.docgen.parts import estimate_tokens, split_unit

    body = "".join(f"    v{i} = x * {i}\n" for i in range(40))
    doc = '    """' + "Long words. " * 200 + '"""\n'
    unit = _units("l.py", "python", f"def f(x):\n{doc}{body}    return v0\n")["f"]
    budget = estimate_tokens(unit.stable_code) + 5
    assert estimate_tokens(unit.code) > budget
    assert split_unit(unit, budget) == [] and unit.prompt_code == unit.stable_code
    assert "Long words" not in unit.prompt_code and "v39 = x * 39" in unit.prompt_code
