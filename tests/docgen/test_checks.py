"""Checks on generated docs, one rule at a time."""
from app.docgen.checks import check_doc, cut_off_reason, documented_params, documented_raises, named_identifiers
from app.docgen.chunker import chunk_source

SRC = '''def f(a, b=1):
    if a:
        raise KeyError(a)
    return a + b


def g(x):
    print(x)
'''
UNITS = {u.qualname: u for u in chunk_source("m.py", "python", SRC).units}
KNOWN = {"f", "g", "a", "b", "x", "KeyError", "print"}


def causes(unit, text, finish="stop"):
    return sorted({f["cause"] for f in check_doc(UNITS[unit], text, finish, KNOWN).failures})


def test_param_styles():
    assert documented_params("Args:\n    a (int): x.\n    b: y.\n") == ({"a", "b"}, True)
    assert documented_params("Parameters\n----------\na : int\n    x\nb\n    y\n") == ({"a", "b"}, True)
    assert documented_params(":param int a: x\n:param b: y") == ({"a", "b"}, True)
    assert documented_params("@param {number} a x\n@param b y") == ({"a", "b"}, True)
    assert documented_params("# Arguments\n\n* `a` - x\n") == ({"a"}, True)
    assert documented_params("Adds two numbers.") == (set(), False)


def test_rules():
    assert causes("f", "Add a and b.\n\nArgs:\n    a: x.\n    b: y.\n\nReturns:\n    The sum.\n\nRaises:\n    KeyError: when a.") == []
    assert causes("f", "Add.\n\nArgs:\n    a: x.\n    c: y.") == ["params"]  # c invented, b left out
    assert causes("g", "Print x.\n\nReturns:\n    Something.") == ["returns"]
    assert causes("f", "Add.\n\nRaises:\n    ValueError: never.") == ["raises"]
    assert causes("f", "Add via `frobnicate_all()`.") == ["identifiers"]
    assert causes("f", "Adds the numbers", "length") == ["cut_off"]
    assert causes("f", "Adds the numbers and") == ["cut_off"]
    assert causes("f", "Adds (the numbers.") == ["cut_off"]


def test_identifier_extraction_and_truthfulness():
    assert named_identifiers("Calls `helper.run(x)` then snake_case_name and camelCase; see ```code_block```.") == \
        ["helper", "run", "snake_case_name", "camelCase"]
    res = check_doc(UNITS["f"], "Uses `add_all` and `no_such_name`.", "stop", KNOWN | {"add_all"})
    assert (res.named, res.found) == (2, 1)
    assert documented_raises(":raises ValueError: bad\n@throws IOError") == {"ValueError", "IOError"}
    assert cut_off_reason("Fine.", "stop") == "" and cut_off_reason("", "stop") == "empty output"
