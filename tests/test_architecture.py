"""The layers import one way (docs/architecture.md): every `dqnx` import in every module,
including imports inside functions, read with `ast`, must go from a layer to one below it
(or within a package), and the packages must not import each other in a cycle.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dqnx"

# Each top-level package or module of dqnx and its layer: a unit may import units of a
# lower layer only (imports within one unit are free). The package root (dqnx/__init__.py)
# is the public facade and may import anything lazily.
LAYERS: dict[str, int] = {
    "errors": 0, "compile_cache": 0,
    "protocols": 1, "config": 1, "jax_setup": 1,
    "envs": 2, "replay": 2,
    "agents": 3,
    "runs": 4,
    "drivers": 5,
    "trained": 6, "ui": 6,
    "viz": 7,
    "search": 8, "imitation": 8, "inspect": 8, "deploy": 8,
    "api": 9,
    "cli": 10,
}


def unit_of(module: str) -> str:
    """'dqnx.agents.dqn' -> 'agents'; 'dqnx' -> '' (the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path) -> str:
    relative = path.relative_to(SRC.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def dqnx_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every dqnx import in `path`, at any depth of the code."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "dqnx"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "dqnx":
                continue
            if base == "dqnx":  # from dqnx import api: the names are submodules
                found += [(node.lineno, f"dqnx.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return found


@functools.lru_cache(maxsize=1)
def import_graph() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> where ("file:line"), units differing."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        source = unit_of(module_name(path))
        for line, target_module in dqnx_imports(path):
            target = unit_of(target_module)
            if target and target != source:
                edges.setdefault((source, target), []).append(f"{path.relative_to(SRC.parent)}:{line}")
    return edges


def find_cycle(edges) -> list[str] | None:
    """One cycle among the units, as a path [a, b, ..., a], or None."""
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(p)) for p in SRC.rglob("*.py")} - {""}
    assert units <= set(LAYERS), f"give these a layer in LAYERS (and docs/architecture.md): {sorted(units - set(LAYERS))}"


def test_no_import_cycle_between_packages():
    edges = import_graph()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + "; at " + "; ".join(
        f"{a}->{b}: {', '.join(edges[(a, b)])}" for a, b in zip(cycle, cycle[1:]))


def test_layers_import_downwards_only():
    upward = [f"{source} (layer {LAYERS[source]}) imports {target} (layer {LAYERS[target]}) at {', '.join(where)}"
              for (source, target), where in import_graph().items()
              if source and LAYERS.get(source, 99) <= LAYERS.get(target, 99)]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The scanner itself: a lazy import in a function body counts, and so does `from dqnx import x`."""
    sample = tmp_path / "dqnx" / "replay" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text("def f():\n    from dqnx.agents import Batch\n    from dqnx import api\n")
    global SRC
    saved, SRC = SRC, tmp_path / "dqnx"
    try:
        assert [m for _, m in dqnx_imports(sample)] == ["dqnx.agents", "dqnx.api"]
    finally:
        SRC = saved
    assert find_cycle({("a", "b"): [], ("b", "c"): [], ("c", "a"): []}) == ["a", "b", "c", "a"]
    assert find_cycle({("a", "b"): [], ("a", "c"): []}) is None


@pytest.mark.parametrize("unit", ["viz", "search", "imitation", "deploy"])
def test_tools_never_import_the_api(unit):
    where = import_graph().get((unit, "api"), [])
    assert not where, f"{unit} imports dqnx.api at {', '.join(where)}; use dqnx.trained"


# --- function length ------------------------------------------------------------------------

MAX_FUNCTION_LINES = 80  # issue 14: a longer body hides its steps; name them as functions


def own_body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's own body: its docstring and nested functions and classes left out."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    lines = set(range(body[0].lineno, function.end_lineno + 1))
    for node in ast.walk(function):
        if node is not function and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            lines -= set(range(node.lineno - len(node.decorator_list), node.end_lineno + 1))
    return len(lines)


def test_no_function_body_over_80_lines():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            # a span within the limit needs no closer look (own_body_lines walks the whole body)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno > MAX_FUNCTION_LINES \
                    and own_body_lines(node) > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name} ({own_body_lines(node)} lines)")
    assert not long, f"function bodies over {MAX_FUNCTION_LINES} lines; break them into named steps:\n" + "\n".join(long)


def test_api_defines_public_entry_points_only():
    """api.py is the public entry points; what they need lives in the layer it belongs to."""
    tree = ast.parse((SRC / "api.py").read_text())
    private = [f"{node.name} (line {node.lineno})" for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name.startswith("_")]
    assert not private, "api.py defines private helpers; move them to drivers/, runs/, config/, envs/, search/ or trained.py: " + ", ".join(private)
