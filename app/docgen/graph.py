"""Dependency graph between units, its strongly connected components, and waves.

Edges point from a unit to what it needs documented first: callees (precise for Python through
its imports, by name elsewhere), a class's members, a module's top-level units, a split unit's
parts. Cycles collapse into one component; components are scheduled in waves, callees first.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from app.docgen.pyimports import module_names
from app.docgen.units import CALLABLE_KINDS, CONTAINER_KINDS, MODULE, SourceUnit

MAX_NAME_CANDIDATES = 3  # a name matching more units than this says nothing about which one is meant


@dataclass
class Schedule:
    deps: dict[str, set[str]]  # uid -> uids it depends on
    components: list[list[str]]  # strongly connected components, callees first
    waves: list[list[str]]  # uids per wave; every dependency outside a unit's component is in an earlier wave


class _Index:
    def __init__(self, units: list[SourceUnit]) -> None:
        self.units = {u.uid: u for u in units}
        self.by_file: dict[tuple[str, str], str] = {(u.path, u.qualname): u.uid for u in units}
        self.by_name: dict[str, list[str]] = defaultdict(list)
        for u in units:
            if u.kind in CALLABLE_KINDS or u.kind in CONTAINER_KINDS:
                self.by_name[u.name.split(".")[-1]].append(u.uid)
        self.py_modules: dict[str, str] = {}
        # A total order (a set's order changes per process): the shallowest path, a .py before its
        # .pyi stub, then by name. Otherwise `pkg/__init__.py` vs `.pyi` flipped between runs.
        paths = {u.path for u in units if u.language == "python"}
        for path in sorted(paths, key=lambda p: (p.count("/"), p.endswith(".pyi"), p)):
            for name in module_names(path):
                self.py_modules.setdefault(name, path)

    def in_module(self, module: str, qual: str) -> str | None:
        path = self.py_modules.get(module)
        return self.by_file.get((path, qual)) if path else None


def _resolve_python(callee: str, unit: SourceUnit, idx: _Index, imports: dict) -> str | None:
    parts = callee.split(".")
    cls = unit.qualname.rsplit(".", 1)[0] if unit.kind == "method" else ""
    if parts[0] in ("self", "cls") and len(parts) == 2 and cls:
        return idx.by_file.get((unit.path, f"{cls}.{parts[1]}"))
    local = idx.by_file.get((unit.path, ".".join(parts)))
    if local:
        return local
    head = parts[0]
    if head not in imports:
        return None
    module, name = imports[head]
    if not name:  # import pkg.mod [as head]: head.f / head.sub.f
        return idx.in_module(".".join([module] + parts[1:-1]), parts[-1])
    # from module import name [as head]: a function/class in module, or a submodule
    found = idx.in_module(module, ".".join([name] + parts[1:]))
    if found:
        return found
    if len(parts) >= 2:
        return idx.in_module(f"{module}.{name}" if module else name, ".".join(parts[1:]))
    return None


# Languages that can call each other's definitions by name (a Go `len(x)` is not a Rust `Match.len`).
_FAMILY = {"javascript": "js", "typescript": "js", "tsx": "js", "c": "c", "cpp": "c"}


def _resolve_by_name(callee: str, unit: SourceUnit, idx: _Index) -> list[str]:
    name = callee.split(".")[-1]
    family = _FAMILY.get(unit.language, unit.language)
    cands = [c for c in idx.by_name.get(name, []) if c != unit.uid
             and _FAMILY.get(idx.units[c].language, idx.units[c].language) == family]
    same_file = [c for c in cands if idx.units[c].path == unit.path]
    if same_file:
        return same_file
    folder = unit.path.rsplit("/", 1)[0] if "/" in unit.path else ""
    same_dir = [c for c in cands if (idx.units[c].path.rsplit("/", 1)[0] if "/" in idx.units[c].path else "") == folder]
    if same_dir:
        return same_dir
    return cands if len(cands) <= MAX_NAME_CANDIDATES else []


def build_deps(units: list[SourceUnit], py_imports: dict[str, dict | None]) -> dict[str, set[str]]:
    idx = _Index(units)
    deps: dict[str, set[str]] = {u.uid: set() for u in units}
    for u in units:
        if u.kind == "part":
            continue
        deps[u.uid].update(u.parts)
        if u.kind == "module":
            deps[u.uid].update(v.uid for v in units if v.path == u.path and not v.parent
                               and v.kind not in ("module", "part"))
            continue
        if u.kind in CONTAINER_KINDS:
            folder = u.path.rsplit("/", 1)[0] if "/" in u.path else ""
            for v in units:
                same_place = v.path == u.path or (u.language == "go" and v.path.startswith(folder))
                if v.parent == u.qualname and same_place and v.kind != "part":
                    deps[u.uid].add(v.uid)
        imports = py_imports.get(u.path) if u.language == "python" else None
        for callee in u.calls:
            if u.language == "python" and imports is not None:
                target = _resolve_python(callee, u, idx, imports)
                deps[u.uid].update([target] if target else [])
            else:
                deps[u.uid].update(_resolve_by_name(callee, u, idx))
        deps[u.uid].discard(u.uid)
    return deps


def strongly_connected(nodes: list[str], deps: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative. Components come out callees first (reverse topological order)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(deps.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(deps.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def schedule(units: list[SourceUnit], deps: dict[str, set[str]], fast: bool = False) -> Schedule:
    nodes = [u.uid for u in units]
    if fast:  # no ordering: one wave, no callee context
        return Schedule(deps={n: set() for n in nodes}, components=[[n] for n in nodes], waves=[nodes])
    comps = strongly_connected(nodes, deps)
    comp_of = {uid: i for i, comp in enumerate(comps) for uid in comp}
    level: list[int] = []
    for i, comp in enumerate(comps):  # dependencies were emitted before, so their levels are known
        outside = {comp_of[d] for uid in comp for d in deps[uid] if comp_of[d] != i}
        level.append(1 + max((level[j] for j in outside), default=-1))
    waves: list[list[str]] = [[] for _ in range(max(level, default=-1) + 1)]
    for i, comp in enumerate(comps):
        waves[level[i]].extend(comp)
    return Schedule(deps=deps, components=comps, waves=waves)


def is_module(uid: str) -> bool:
    return uid.endswith("::" + MODULE)
