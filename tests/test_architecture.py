"""The architecture of surgeon: the import graph of its own modules has no cycle, counting the
imports inside functions too (a function-level import hides a cycle, it does not remove it), and
the library never picks a matplotlib backend (only the CLI does)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"surgeon": ROOT / "surgeon", "surgeon.cli": ROOT / "cli"}  # cli/ is installed as surgeon.cli


def _modules() -> dict[str, Path]:
    """Every module of surgeon (and of cli/ as surgeon.cli), by dotted name."""
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` inside `module`."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the surgeon modules it imports (module level and inside functions): for ``from X
    import name`` the submodule X.name when it is one, else X; the parent packages of an imported
    module too (importing a.b runs a/__init__ first), except the root package ``surgeon``, whose
    names load lazily (PEP 562) and which imports nothing of its own at import time."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_pkg, node.level, node.module)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:  # ``import surgeon.io as x`` / ``from surgeon.io import f``
                    t = t.rpartition(".")[0]
                implied = False  # a parent package the import runs first, rather than the target
                while t and t != "surgeon":
                    # a package that holds `name` is initialised before `name` runs, so reaching a
                    # sibling through it is no cycle (importing names from the package itself is)
                    if t != name and not (implied and name.startswith(t + ".")):
                        graph[name].add(t)
                    t, implied = t.rpartition(".")[0], True
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_hidden_cycle():
    """The check can fail: a cycle through a function-level import is found."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    src = "def f():\n    from .io import load\n"
    tree = ast.parse(src)
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imports and _resolve("surgeon.models", False, imports[0].level, imports[0].module) == "surgeon.io"


def test_graph_sees_function_level_imports():
    g = import_graph()
    assert "surgeon.graph" in g["surgeon.passes"]  # module level
    assert "surgeon.provenance" in g["surgeon.io"]
    assert g["surgeon.modelinfo"] <= {"surgeon.provenance", "surgeon.errors", "surgeon.version"}  # a leaf
    # a sibling inside a package, reached without its (already running) package __init__
    assert "surgeon.graph.block" in g["surgeon.graph.select"] and "surgeon.graph" not in g["surgeon.graph.select"]
    assert "surgeon.graph" in g["surgeon.probes"]  # from outside, the package runs first


def test_matplotlib_backend_chosen_only_by_the_cli():
    for name, path in _modules().items():
        if name.startswith("surgeon.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "use":
                owner = node.func.value
                assert not (isinstance(owner, ast.Name) and owner.id == "matplotlib"), f"{name} calls matplotlib.use"


def long_functions(limit: int = 80) -> list[str]:
    """``module.function (N lines)`` for every function of surgeon and cli/ longer than `limit`
    lines (decorators excluded, docstring included), nested functions and methods too."""
    out = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    out.append(f"{name}.{node.name} ({lines} lines)")
    return out


def test_functions_are_short():
    assert long_functions() == []
    assert long_functions(limit=5)  # the walk sees functions at all (a check that can fail)
