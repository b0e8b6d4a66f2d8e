"""The floor plan holds: no import circle among the cluster's modules, and bench/ needs nothing from tests/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("crawlcluster", "workers", "tasks")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imported_names(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (a lazy import still
    ties two modules together)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
               if "migrations" not in path.parts}
    # the package crawlcluster re-exports the public API from its modules; a module that
    # imports a name from the package is not a circle through its own file
    return {name: {target for target in _imported_names(path) if target in modules and target not in (name, *PACKAGES)}
            for name, path in modules.items()}


def _find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle in ``graph`` as a path that ends where it starts, or None (a depth-first
    search: a module reached again while still on the path closes a circle)."""
    finished: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        for target in sorted(graph[module]):
            if target in path:
                return path[path.index(target):] + [target]
            if target not in finished:
                circle = visit(target, path + [target])
                if circle:
                    return circle
        finished.add(module)
        return None

    for start in sorted(graph):
        if start not in finished:
            circle = visit(start, [start])
            if circle:
                return circle
    return None


def test_the_cluster_modules_import_each_other_without_a_circle() -> None:
    graph = _import_graph()
    assert "workers.browser.renderer" in graph and "crawlcluster.http" in graph
    circle = _find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_circle_finder_finds_a_circle() -> None:
    assert _find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_circle({"x": {"y", "z"}, "y": {"z"}, "z": {"y"}}) == ["y", "z", "y"]
    assert _find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_bench_imports_nothing_from_tests() -> None:
    for path in (ROOT / "bench").rglob("*.py"):
        offending = sorted(name for name in _imported_names(path) if name == "tests" or name.startswith("tests."))
        assert not offending, f"{path.relative_to(ROOT)} imports {offending}; shared helpers belong in crawlcluster/devtools/"
