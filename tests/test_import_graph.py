"""noa's modules import one way: no circle among them, so each can be read, tested and loaded
without the ones above it, and an import inside a function is never a way around a circle.

The graph is read from the source with ``ast``: every ``import noa...`` and ``from noa... import``
statement, at module level and inside functions (those run later but still close a circle), less
``if TYPE_CHECKING:`` blocks, which never run. ``from noa.a import b`` is an edge to ``noa.a.b``
when that is a module, else to ``noa.a``; a package's ``__init__`` is not counted as imported by
its submodules (Python runs it first, but that is the package's layout, not a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node`` (functions included), less TYPE_CHECKING blocks."""
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            found += [n for branch in child.orelse for n in _import_nodes_of(branch)]
            continue
        found += _import_nodes_of(child)
    return found


def _import_nodes_of(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    own = [node] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
    return own + _import_nodes(node)


def imported_modules(path: Path, name: str, modules: set[str]) -> set[str]:
    """The noa modules ``path`` (module ``name``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {t for t in targets if t in modules and t != name}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (SRC / "noa").rglob("*.py")}
    return {name: imported_modules(path, name, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]], among: set[str]) -> list[str] | None:
    """One circle of imports among the modules ``among``, as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node] & among):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(among):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_noa_imports_have_no_circle() -> None:
    graph = import_graph()
    assert {"noa", "noa.tokenizer.model", "noa.data.ics"} <= set(graph), "the source tree was not found"
    cycle = find_cycle(graph, set(graph))
    assert cycle is None, f"noa has an import circle: {' -> '.join(cycle or [])}"


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The reader finds the imports a circle hides in (inside functions, relative ones) and
    skips TYPE_CHECKING blocks: otherwise the test above could pass with a circle in place."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n    from noa.pkg.c import Thing\n"
        "def f():\n    from noa.pkg.d import g\n    import noa.pkg.e\n"
    )
    path = tmp_path / "a.py"
    path.write_text(source)
    modules = {"noa.pkg.a", "noa.pkg.b", "noa.pkg.c", "noa.pkg.d", "noa.pkg.e"}
    # the file sits in tmp_path, so give imported_modules its package by the module name
    assert imported_modules(path, "noa.pkg.a", modules) == {"noa.pkg.b", "noa.pkg.d", "noa.pkg.e"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph, set(graph)) == ["a", "b", "c", "a"]
    assert find_cycle(graph, {"a", "b", "d"}) is None
