"""The package's shape, checked from the source with ``ast`` only (nothing is imported):

- no module in ``llmad/`` over 600 lines;
- no import cycle between llmad modules (module-level and function-level imports alike);
- no ``from llmad.x import _private`` across modules;
- layers only look down: cli -> harness -> api -> stream -> detectors -> (render, metrics, models) -> data ->
  (io, rundir, config, errors).
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "llmad"
MAX_LINES = 600

# Rank of each top-level area: a module may import its own rank or lower ones, never a higher one.
LAYERS = {
    "llmad.__main__": 8,
    "llmad.cli": 7,
    "llmad.harness": 6,
    "llmad.api": 5,
    "llmad.stream": 4,
    "llmad.detectors": 3,
    "llmad.render": 2, "llmad.metrics": 2, "llmad.models": 2,
    "llmad.data": 1,
    "llmad.io": 0, "llmad.rundir": 0, "llmad.config": 0, "llmad.errors": 0,
    "llmad": 0,  # the package's __init__: a docstring and a version, importing nothing of its own
}


@lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under llmad/."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:`` (never executed, so no runtime edge)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for n in ast.walk(sub):
                    if isinstance(n, (ast.Import, ast.ImportFrom)):
                        skip.add(id(n))
    return skip


def _resolve(importer: str, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from ... import`` names (relative imports resolved)."""
    if not node.level:
        return node.module
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@lru_cache(maxsize=1)
def imports() -> dict[str, list[tuple[str, int, tuple[str, ...]]]]:
    """Module -> [(imported llmad module, line, names imported from it)], every import anywhere in the file."""
    mods = modules()
    out: dict[str, list[tuple[str, int, tuple[str, ...]]]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _type_checking_only(tree)
        edges = []
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "llmad":
                        edges.append((_known(alias.name), node.lineno, ()))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, node)
                if not target or target.split(".")[0] != "llmad":
                    continue
                plain = []
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in mods:  # `from llmad.x import y` where y is a module: an edge to that module
                        edges.append((sub, node.lineno, ()))
                    else:
                        plain.append(alias.name)
                if plain:
                    edges.append((_known(target), node.lineno, tuple(plain)))
        out[name] = edges
    return out


def _known(name: str) -> str:
    """The nearest existing module for a dotted name (``llmad.x.y`` names an attribute of ``llmad.x``)."""
    mods = modules()
    while name not in mods and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _area(name: str) -> str:
    """The LAYERS key a module belongs to (its longest matching prefix)."""
    best = ""
    for key in LAYERS:
        if (name == key or name.startswith(key + ".")) and len(key) > len(best):
            best = key
    return best


def test_modules_are_small():
    big = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them): " + ", ".join(
        f"{k} ({v})" for k, v in sorted(big.items(), key=lambda kv: -kv[1]))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle path per strongly connected component with a cycle (Tarjan, iterative)."""
    index, low, on_stack, stack, sccs = {}, {}, set(), [], []
    counter = [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1 or node in graph[node]:
                    sccs.append(sorted(comp))
    paths = []
    for comp in sccs:
        members = set(comp)
        start = comp[0]
        # shortest path start -> ... -> start inside the component (BFS)
        prev: dict[str, str] = {}
        frontier, seen, end = [start], {start}, None
        while frontier and end is None:
            nxt_frontier = []
            for u in frontier:
                for v in sorted(graph[u] & members):
                    if v == start:
                        end = u
                        break
                    if v not in seen:
                        seen.add(v)
                        prev[v] = u
                        nxt_frontier.append(v)
                if end is not None:
                    break
            frontier = nxt_frontier
        path = [start]
        node = end
        while node is not None and node != start:
            path.insert(1, node)
            node = prev.get(node)
        paths.append(path + [start])
    return paths


def test_no_import_cycles():
    graph = {m: {t for t, _, _ in edges if t != m} for m, edges in imports().items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles (function-level imports count too):\n" + "\n".join(
        " -> ".join(c) for c in cycles)


def test_cycle_finder_reports_the_path():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_imports_across_modules():
    bad = []
    for name, edges in imports().items():
        for target, line, names in edges:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != name:
                bad.append(f"{modules()[name].relative_to(PKG.parent)}:{line}: from {target} import "
                           f"{', '.join(private)}")
    assert not bad, "private names imported across modules (make them public or move them):\n" + "\n".join(bad)


def test_every_module_has_a_layer():
    missing = sorted(m for m in modules() if not _area(m))
    assert not missing, f"modules in no layer (add their area to LAYERS in {Path(__file__).name}): {missing}"


def test_layers_only_look_down():
    bad = []
    for name, edges in imports().items():
        src = _area(name)
        for target, line, _ in edges:
            dst = _area(target)
            if src and dst and LAYERS[dst] > LAYERS[src]:
                bad.append(f"{modules()[name].relative_to(PKG.parent)}:{line}: {src} imports {target} ({dst} is a "
                           f"higher layer)")
    assert not bad, "lower layers import higher ones:\n" + "\n".join(sorted(bad))
