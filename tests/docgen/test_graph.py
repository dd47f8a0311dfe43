"""Dependency graph: SCCs against a brute-force reference, and waves put callees first."""
import random

from app.docgen.graph import schedule, strongly_connected
from app.docgen.planner import make_plan
from tests.docgen.conftest import write


def reference_sccs(nodes, deps):
    """Obviously correct: u and v share a component iff each reaches the other."""
    reach = {}
    for n in nodes:
        seen, todo = {n}, [n]
        while todo:
            for m in deps.get(todo.pop(), ()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        reach[n] = seen
    comps = {frozenset(m for m in nodes if m in reach[n] and n in reach[m]) for n in nodes}
    return comps


def test_tarjan_matches_reference_on_random_graphs():
    rng = random.Random(0)
    for trial in range(200):
        n = rng.randint(1, 12)
        nodes = [f"n{i}" for i in range(n)]
        deps = {a: {b for b in nodes if rng.random() < 0.2} - {a} for a in nodes}
        comps = strongly_connected(nodes, deps)
        assert {frozenset(c) for c in comps} == reference_sccs(nodes, deps)
        assert sorted(x for c in comps for x in c) == sorted(nodes)
        order = {x: i for i, c in enumerate(comps) for x in c}
        for a in nodes:  # callees first: every dependency's component comes no later
            assert all(order[b] <= order[a] for b in deps[a])


CYCLE = {
    "pkg/__init__.py": "",
    "pkg/a.py": "from pkg.b import ping\n\ndef leaf():\n    return 1\n\ndef pong(n):\n    return ping(n - 1) + leaf()\n",
    "pkg/b.py": "import pkg.a as a\n\ndef ping(n):\n    return a.pong(n) if n else 0\n\ndef top():\n    return ping(3)\n",
    "x.go": "package x\n\nfunc A() int { return B() }\n\nfunc B() int { return A() + C() }\n\nfunc C() int { return 1 }\n",
}


def test_waves_callees_first_with_cycle(tmp_path):
    plan = make_plan(write(tmp_path, CYCLE))
    deps = plan.schedule.deps
    assert deps["pkg/a.py::pong"] == {"pkg/b.py::ping", "pkg/a.py::leaf"}  # precise: through imports
    assert deps["pkg/b.py::ping"] == {"pkg/a.py::pong"}
    wave_of = {uid: i for i, w in enumerate(plan.schedule.waves) for uid in w}
    assert wave_of["pkg/a.py::pong"] == wave_of["pkg/b.py::ping"]  # the cycle shares a wave
    assert wave_of["pkg/a.py::leaf"] < wave_of["pkg/a.py::pong"] < wave_of["pkg/b.py::top"]
    assert wave_of["x.go::A"] == wave_of["x.go::B"] > wave_of["x.go::C"]
    comp = {uid: i for i, c in enumerate(plan.schedule.components) for uid in c}
    for uid, ds in deps.items():
        for d in ds:
            assert comp[d] == comp[uid] or wave_of[d] < wave_of[uid]
    # module chunks come after everything they contain
    assert wave_of["pkg/a.py::<module>"] > wave_of["pkg/a.py::pong"]


def test_fast_is_one_wave(tmp_path):
    from app.docgen.planner import PlanConfig
    plan = make_plan(write(tmp_path, CYCLE), PlanConfig(fast=True))
    assert len(plan.schedule.waves) == 1 and len(plan.schedule.waves[0]) == len(plan.units)


def test_python_unresolved_calls_make_no_edges(tmp_path):
    plan = make_plan(write(tmp_path, {"m.py": "def area():\n    return 1\n\ndef f(c):\n    return c.area() + len([])\n"}))
    assert plan.schedule.deps["m.py::f"] == set()
    assert schedule(plan.units, plan.schedule.deps).waves[0]
