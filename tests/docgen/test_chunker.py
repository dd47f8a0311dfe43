"""Chunking small files in every supported language: exact names, kinds and line spans."""
import pytest

from app.docgen.chunker import chunk_source

PY = '''"""Module doc."""
import os


def helper(x, *args, y=1, **kw):
    return os.path.join(x)


@decorator
class Thing(Base):
    """Human doc."""

    def method(self, a: int) -> int:
        if a:
            raise ValueError("no")
        return helper(a)

    def gen(self):
        yield 1
'''
JS = '''// Adds.
function add(a, b = 1, ...rest) { return helper(a) + b; }
const mul = (x, y) => x * y;
class Box {
  constructor(v) { this.v = v; }
  get() { return this.v.value(); }
}
export function outer(z) { return add(z); }
'''
TS = '''interface Shape { area(): number; }
export class Sq implements Shape {
  constructor(private s: number) {}
  area(): number { return this.s * this.s; }
}
function make(n: number, opt?: string): Sq { return new Sq(n); }
'''
GO = '''package main

// Point is a point.
type Point struct { X, Y int }

func (p *Point) Norm(scale int) int { return abs(p.X) * scale }

func abs(x int) int { if x < 0 { return -x }; return x }
'''
RS = '''/// A counter.
pub struct Counter { n: u32 }

impl Counter {
    pub fn new() -> Self { Counter { n: 0 } }
    fn bump(&mut self, by: u32) { self.n += by; helper(by); }
}

fn helper(x: u32) -> u32 { x }
'''
JAVA = '''/** Greeter. */
public class A {
    private int n;
    public A(int n) { this.n = n; }
    public String greet(String who, int times) throws Exception { return fmt(who); }
}
'''
C = '''struct pt { int x; };
/* adds */
static int add(int a, int *b) { return a + *b; }
int main(void) { return add(1, 0); }
'''
CPP = '''namespace ns {
class Foo {
 public:
  int bar(int x) const { return x; }
};
}
int ns_free(int y) { ns::Foo f; return f.bar(y); }
template <typename T> T twice(T v) { return v + v; }
'''

CASES = {
    "python": ("m.py", PY, [("<module>", "module", 1, 19), ("helper", "function", 5, 6), ("Thing", "class", 9, 19),
                           ("Thing.method", "method", 13, 16), ("Thing.gen", "method", 18, 19)]),
    "javascript": ("a.js", JS, [("<module>", "module", 1, 8), ("add", "function", 2, 2), ("mul", "function", 3, 3),
                                ("Box", "class", 4, 7), ("Box.constructor", "method", 5, 5), ("Box.get", "method", 6, 6),
                                ("outer", "function", 8, 8)]),
    "typescript": ("a.ts", TS, [("<module>", "module", 1, 6), ("Shape", "interface", 1, 1), ("Sq", "class", 2, 5),
                                ("Sq.constructor", "method", 3, 3), ("Sq.area", "method", 4, 4), ("make", "function", 6, 6)]),
    "go": ("a.go", GO, [("<module>", "module", 1, 8), ("Point", "struct", 4, 4), ("Point.Norm", "method", 6, 6),
                        ("abs", "function", 8, 8)]),
    "rust": ("a.rs", RS, [("<module>", "module", 1, 9), ("Counter", "struct", 2, 2), ("impl Counter", "impl", 4, 7),
                          ("Counter.new", "method", 5, 5), ("Counter.bump", "method", 6, 6), ("helper", "function", 9, 9)]),
    "java": ("A.java", JAVA, [("<module>", "module", 1, 6), ("A", "class", 2, 6), ("A.A", "method", 4, 4),
                              ("A.greet", "method", 5, 5)]),
    "c": ("a.c", C, [("<module>", "module", 1, 4), ("pt", "struct", 1, 1), ("add", "function", 3, 3),
                     ("main", "function", 4, 4)]),
    "cpp": ("a.cpp", CPP, [("<module>", "module", 1, 8), ("ns.Foo", "class", 2, 5), ("ns.Foo.bar", "method", 4, 4),
                           ("ns_free", "function", 7, 7), ("twice", "function", 8, 8)]),
}


@pytest.mark.parametrize("language", sorted(CASES))
def test_names_kinds_spans(language):
    path, src, expected = CASES[language]
    fc = chunk_source(path, language, src)
    assert not fc.parse_errors
    assert [(u.qualname, u.kind, u.start_line, u.end_line) for u in fc.units] == expected


def test_python_details():
    units = {u.qualname: u for u in chunk_source("m.py", "python", PY).units}
    assert units["<module>"].existing_doc == "Module doc."
    assert units["Thing"].existing_doc == "Human doc."
    assert units["Thing"].signature == "class Thing(Base)"
    assert units["helper"].params == ["x", "args", "y", "kw"]
    m = units["Thing.method"]
    assert (m.params, m.returns_value, m.raises, m.parent) == (["self", "a"], True, ["ValueError"], "Thing")
    assert "helper" in m.calls
    assert units["Thing.gen"].yields and not units["Thing.gen"].returns_value
    # The class skeleton elides method bodies, so editing a body does not change the class chunk.
    assert "raise ValueError" not in units["Thing"].code and "def method(self, a: int) -> int:" in units["Thing"].code


def test_other_language_details():
    js = {u.qualname: u for u in chunk_source("a.js", "javascript", JS).units}
    assert js["add"].existing_doc == "Adds." and js["add"].params == ["a", "b", "rest"] and js["add"].calls == ["helper"]
    go = {u.qualname: u for u in chunk_source("a.go", "go", GO).units}
    assert go["Point"].existing_doc == "Point is a point." and go["Point.Norm"].parent == "Point"
    rs = {u.qualname: u for u in chunk_source("a.rs", "rust", RS).units}
    assert rs["Counter"].existing_doc == "A counter." and rs["Counter.bump"].params == ["self", "by"]
    assert not rs["Counter.bump"].returns_value and rs["helper"].returns_value
    java = {u.qualname: u for u in chunk_source("A.java", "java", JAVA).units}
    assert java["A"].existing_doc == "Greeter." and java["A.greet"].raises == ["Exception"]
    c = {u.qualname: u for u in chunk_source("a.c", "c", C).units}
    assert c["add"].params == ["a", "b"] and c["add"].existing_doc == "adds" and c["main"].calls == ["add"]


def test_js_default_exports_are_functions():
    """npm left-pad's `module.exports = function (...)`: an anonymous default export is the module's
    function, not a method of an object called `exports`; a named one takes its own name."""
    anon = chunk_source("index.js", "javascript", "module.exports = function (s, n) {\n  return s;\n};\n").units
    assert [(u.qualname, u.name, u.kind) for u in anon[1:]] == [("module.exports", "module.exports", "function")]
    src = "module.exports = function pad(s) { return s; };\nexports.util = function (a) { return a; };\n"
    assert [(u.qualname, u.kind) for u in chunk_source("i.js", "javascript", src).units[1:]] == [
        ("pad", "function"), ("util", "function")]
    obj = chunk_source("o.js", "javascript", "app.init = function () { return 1; };\n").units
    assert [(u.qualname, u.kind) for u in obj[1:]] == [("app.init", "method")]


def test_getter_and_setter_are_one_unit():
    src = "class P:\n    @property\n    def x(self):\n        return 1\n\n    @x.setter\n    def x(self, v):\n        pass\n"
    quals = [u.qualname for u in chunk_source("p.py", "python", src).units]
    assert quals == ["<module>", "P", "P.x"]  # one property, one doc (merged by overloads.py)


def test_syntax_error_still_chunks():
    fc = chunk_source("bad.py", "python", "def ok(a):\n    return a\n\ndef broken(:\n    pass\n")
    assert fc.parse_errors
    assert "ok" in [u.qualname for u in fc.units]
