"""No import circles in the project: the folder map stays a map.

Every ``import`` and ``from ... import`` in ``agent/``, ``ops/``, ``provisioning/``
and ``hardware_sim/`` counts, at the top of a module and inside functions alike
(an import moved into a function hides a circle from Python, not from a reader).
Relative imports are resolved, and ``from pkg import name`` points at the module
``pkg.name`` when there is one, otherwise at ``pkg`` itself. A package's
``__init__`` is only an edge when it is named; importing ``a.b.c`` is an edge to
``a.b.c`` alone (that Python also runs ``a/__init__.py`` on the way is no circle).
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "ops", "provisioning", "hardware_sim")


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``source``'s line ``line``."""

    source: str
    target: str
    line: int


def project_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to: itself, or its nearest project ancestor."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, modules: dict[str, Path]) -> list[Edge]:
    """The project modules ``module`` imports, anywhere in its body."""
    tree = ast.parse(modules[module].read_text(encoding="utf-8"), str(modules[module]))
    package = module if _is_package(module, modules) else module.rpartition(".")[0]
    edges: list[Edge] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != module:
                edges.append(Edge(module, resolved, node.lineno))
    return edges


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, list[Edge]]:
    """Module -> its import edges to other project modules."""
    modules = project_modules(root, packages)
    return {m: imports_of(m, modules) for m in modules}


def _components(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            edges = graph[node]
            if i < len(edges):
                work.append((node, i + 1))
                nxt = edges[i].target
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def _shortest_cycle(graph: dict[str, list[Edge]], members: set[str], start: str) -> list[Edge]:
    """One shortest circle from ``start`` back to itself inside ``members``, as edges."""
    came: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for edge in graph[node]:
            if edge.target not in members:
                continue
            if edge.target == start:
                path = [edge]
                while path[0].source != start:
                    path.insert(0, came[path[0].source])
                return path
            if edge.target not in came:
                came[edge.target] = edge
                queue.append(edge.target)
    raise AssertionError(f"no circle through {start} in {sorted(members)}")


def circles(graph: dict[str, list[Edge]]) -> list[str]:
    """Each import circle as a readable chain: ``a (line 12) -> b (line 3) -> a``.

    A knot of several modules is shown as a few shortest circles that, together,
    pass through every module of the knot.
    """
    described = []
    for component in _components(graph):
        members, covered = set(component), set()
        for start in component:
            if start in covered:
                continue
            chain = _shortest_cycle(graph, members, start)
            covered.update(e.source for e in chain)
            steps = " -> ".join(f"{e.source} (line {e.line})" for e in chain)
            described.append(f"{steps} -> {start}")
    return described


def test_the_project_has_no_import_circle() -> None:
    graph = import_graph(REPO, PACKAGES)
    assert len(graph) > 50, "the walker found too few modules: is it looking in the right place?"
    found = circles(graph)
    assert not found, "import circles (module (line of its import) -> ...):\n  " + "\n  ".join(
        found)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_a_circle_hidden_in_a_function_is_found_and_named(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "def f():\n    from pkg.high import g\n    return g\n",
        "pkg/high.py": "import os\n\nfrom pkg import low\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/leaf.py": "from .. import low\n",
    })
    graph = import_graph(tmp_path, ["pkg"])
    assert [e.target for e in graph["pkg.sub.leaf"]] == ["pkg.low"]  # relative, from-module
    assert circles(graph) == ["pkg.high (line 3) -> pkg.low (line 2) -> pkg.high"]


def test_relative_imports_and_a_package_init_resolve(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import A\n",
        "pkg/a.py": "from . import b\nA = 1\n",
        "pkg/b.py": "from .a import A\n",
        "pkg/c.py": "import pkg.a.missing\nfrom pkg import A\n",
    })
    graph = import_graph(tmp_path, ["pkg"])
    assert {e.target for e in graph["pkg.c"]} == {"pkg.a", "pkg"}
    assert circles(graph) == ["pkg.a (line 1) -> pkg.b (line 1) -> pkg.a"]
