"""--write/--diff: only docstrings change (AST equality), human docstrings kept, dirty files refused."""
import ast

import pytest

from app.docgen.writers.docstrings import strip_docstrings, write_docstrings
from app.docgen.writers.pyliteral import format_docstring
from tests.docgen.conftest import git_init, run_fake, write

LIB = '''#!/usr/bin/env python
# a comment before the code
import os


def plain(a, b):
    # leading comment in the body
    return a + b


def human(x):
    """Written by a person."""
    return x


class Box:
    @staticmethod
    def make():
        return Box()

    async def run(self, n):
        return n


def one_liner(): return 1
'''


def _repo(tmp_path):
    root = write(tmp_path / "r", {"lib.py": LIB, "other.py": "def o():\n    return 0\n", "x.js": "function j() {}\n"})
    git_init(root)
    return root


def test_write_only_changes_docstrings(tmp_path):
    root = _repo(tmp_path)
    (root / "other.py").write_text("def o():\n    return 1\n")  # uncommitted change: refused
    out, _ = run_fake(root, write_mode="write")
    rep = out.docstrings
    assert rep.written == ["lib.py"]
    assert "other.py" in rep.refused and "uncommitted" in rep.refused["other.py"]
    assert (root / "other.py").read_text() == "def o():\n    return 1\n"
    new = (root / "lib.py").read_text()
    assert strip_docstrings(ast.parse(new)) == strip_docstrings(ast.parse(LIB))
    tree = ast.parse(new)
    fns = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    assert ast.get_docstring(fns["human"]) == "Written by a person."  # kept
    for name in ("plain", "Box", "make", "run"):
        assert ast.get_docstring(fns[name]).startswith(f"Handles `{name}`")
    assert ast.get_docstring(tree).startswith("Module lib.py")
    assert ast.get_docstring(fns["one_liner"]).startswith("Handles `one_liner`")  # the def line was split
    assert "\ndef one_liner():\n    \"\"\"Handles" in new and "\n    return 1\n" in new
    assert not rep.skipped
    assert new.startswith("#!/usr/bin/env python\n# a comment before the code\n\"\"\"Module")
    assert rep.kept_human == 1


def test_overwrite_force_and_diff(tmp_path):
    root = _repo(tmp_path)
    out, _ = run_fake(root, write_mode="diff", overwrite=True)
    assert (root / "lib.py").read_text() == LIB  # diff mode writes nothing
    assert '-    """Written by a person."""' in out.docstrings.diff and "+++ b/lib.py" in out.docstrings.diff
    out, _ = run_fake(root, write_mode="write", overwrite=True)
    human = [n for n in ast.walk(ast.parse((root / "lib.py").read_text()))
             if isinstance(n, ast.FunctionDef) and n.name == "human"][0]
    assert ast.get_docstring(human).startswith("Handles `human`")
    # now lib.py is dirty: refused without --force, written with it
    out, _ = run_fake(root, write_mode="write", overwrite=True)
    assert "lib.py" in out.docstrings.refused
    out, _ = run_fake(root, write_mode="write", overwrite=True, force=True)
    assert out.docstrings.written == ["lib.py", "other.py"]


def test_not_in_git_is_refused(tmp_path):
    root = write(tmp_path / "nogit", {"a.py": "def f():\n    return 1\n"})
    out, _ = run_fake(root, write_mode="write")
    assert "not in a git repository" in out.docstrings.refused["a.py"]


@pytest.mark.parametrize("text", ['Ends with a "quote"', 'Has """ triple quotes', "Back\\slash \\n", "Two\n\n  lines"])
def test_format_docstring_round_trips(text):
    src = "def f():\n" + "\n".join(format_docstring(text, "    ")) + "\n    return 1\n"
    doc = ast.get_docstring(ast.parse(src).body[0])
    assert doc.split() == text.split()
