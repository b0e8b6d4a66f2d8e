"""The floor plan holds: no import circle among the cluster's modules, and bench/ needs nothing
from tests/."""

from __future__ import annotations

import ast
import re
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
    return {name: {target for target in _imported_names(path)
                   if target in modules and target not in (name, *PACKAGES)}
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


def test_the_control_plane_imports_nothing_of_the_data_plane() -> None:
    """DESIGN.md: crawlcluster/ imports nothing of workers/ or tasks/ (lazy imports included);
    what it runs of them it names by string, as the Celery app names its task modules."""
    crossing = sorted(f"{name} imports {target}" for name, targets in _import_graph().items()
                      if name.startswith("crawlcluster") for target in targets
                      if target.split(".")[0] in ("workers", "tasks"))
    assert not crossing, crossing


def test_the_circle_finder_finds_a_circle() -> None:
    assert _find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_circle({"x": {"y", "z"}, "y": {"z"}, "z": {"y"}}) == ["y", "z", "y"]
    assert _find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_bench_imports_nothing_from_tests() -> None:
    for path in (ROOT / "bench").rglob("*.py"):
        offending = sorted(name for name in _imported_names(path)
                           if name == "tests" or name.startswith("tests."))
        assert not offending, \
            f"{path.relative_to(ROOT)} imports {offending}; shared helpers belong in crawlcluster/devtools/"


# what the database layer may not reach, even through another module: the spider API
# (Request, Spider, the scheduling options a request resolves) and the parts above it
DATABASE_LAYER_MUST_NOT_REACH = ("crawlcluster.http", "crawlcluster.spider", "crawlcluster.scheduling",
                                 "crawlcluster.request_rows", "crawlcluster.dispatch", "workers", "tasks")


def _reached_from(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_database_layer_imports_neither_request_nor_spider() -> None:
    graph = _import_graph()
    layer = sorted(name for name in graph if name.startswith("crawlcluster.database."))
    assert "crawlcluster.database.tasks" in layer and "crawlcluster.database.projects" in layer
    for module in layer:
        reached = _reached_from(graph, module)
        offending = sorted(name for name in reached
                           if any(name == bad or name.startswith(bad + ".")
                                  for bad in DATABASE_LAYER_MUST_NOT_REACH))
        assert not offending, f"{module} imports {offending} (directly or through another module)"


# where SQL may be written: the database layer, the engines and the upsert helper, the
# tables, the migrations
SQL_HOMES = ("crawlcluster/database/", "crawlcluster/db.py", "crawlcluster/schema.py",
             "crawlcluster/migrations/")
# sqlalchemy's types and errors may be named anywhere (a function that takes a Connection,
# a command that catches OperationalError); nothing else of sqlalchemy
SQLALCHEMY_ALLOWED = ("sqlalchemy.engine", "sqlalchemy.exc")
# statements are run only by the database layer
EXECUTING = ("execute", "exec_driver_sql", "execution_options")
# E moves the export feed's reads (FeedSync) in its own step; until then its file is the
# one place outside the database layer that still writes SELECTs
def _sql_outside_the_database_layer(path: Path) -> list[str]:
    """What in ``path`` builds or runs SQL: sqlalchemy imports beyond its types and errors,
    and calls of ``.execute(`` and its kin, each with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "sqlalchemy" and node.module not in SQLALCHEMY_ALLOWED:
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found.extend(f"line {node.lineno}: import {alias.name}" for alias in node.names
                         if alias.name.split(".")[0] == "sqlalchemy"
                         and alias.name not in SQLALCHEMY_ALLOWED)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in EXECUTING):
            found.append(f"line {node.lineno}: .{node.func.attr}(")
    return found


def test_sql_is_written_only_in_the_database_layer() -> None:
    checked = 0
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(SQL_HOMES):
                continue
            checked += 1
            found = _sql_outside_the_database_layer(path)
            assert not found, f"{relative} writes SQL outside crawlcluster/database/: {found}"
    assert checked > 30


def test_the_sql_finder_finds_statements_and_leaves_types_alone(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text("from sqlalchemy import select\nfrom sqlalchemy.engine import Connection\n"
                      "from sqlalchemy.exc import OperationalError\nimport sqlalchemy\n\n"
                      "def f(conn):\n    conn.driver_connection.execute('BEGIN')\n")
    assert _sql_outside_the_database_layer(source) == [
        "line 1: from sqlalchemy import ...", "line 4: import sqlalchemy", "line 7: .execute("]


# the folders whose modules the README's Layout table names one by one
LAYOUT_FOLDERS = ("crawlcluster", "workers", "tasks")


def _layout_rows() -> dict[str, str]:
    """The README's Layout table: path -> what it says lives there."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `([^`]+)` \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_the_readme_layout_table_names_every_module_and_nothing_that_is_gone() -> None:
    rows = _layout_rows()
    missing, gone = [], []
    for top in LAYOUT_FOLDERS:
        for folder in sorted({p.parent for p in (ROOT / top).rglob("*.py")}):
            relative = folder.relative_to(ROOT).as_posix() + "/"
            if "migrations" in relative or "__pycache__" in relative:
                continue
            # a package is named by its own row, or by name in its parent's row (`feeds/`)
            text = rows.get(relative)
            if text is None:
                parent = folder.parent.relative_to(ROOT).as_posix() + "/"
                assert f"`{folder.name}/`" in rows.get(parent, ""), f"no Layout row names {relative}"
                continue
            for module in sorted(folder.glob("*.py")):
                if module.name not in ("__init__.py", "__main__.py") and f"`{module.name}`" not in text:
                    missing.append(relative + module.name)
            for named in re.findall(r"`([A-Za-z_]+\.py)`", text):
                if not (folder / named).exists() and not (ROOT / named).exists():
                    gone.append(f"{relative}{named}")
    assert not missing, f"modules the README's Layout table does not name: {missing}"
    assert not gone, f"the README's Layout table names files that do not exist: {gone}"
