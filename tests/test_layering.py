"""The core's layering, checked on its source with `ast` (nothing is imported or run):

- no interestgeo module imports streamlit or the dashboard's pages;
- the interestgeo import graph has no cycle, imports inside functions included (only imports under
  `if TYPE_CHECKING:` are left out: they never run);
- the leaf modules import nothing from interestgeo but other leaves, config and schema (what an
  event is), and schema imports nothing from interestgeo;
- no module-level `__getattr__` (a lazy re-export hides an edge from readers and from this test);
- SQL (SELECT / INSERT / CREATE ... in string literals) appears only in the store package, and the
  check finds the store's own SQL, so it cannot pass by finding nothing.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "interestgeo"
LEAVES = {"metrics", "split", "config", "cells", "windows", "geo"}
BELOW_LEAVES = LEAVES | {"schema"}
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|CREATE\s+(OR\s+REPLACE\s+)?(TEMP\s+)?(TABLE|VIEW|INDEX|SEQUENCE)|"
                 r"DELETE\s+FROM|DROP\s+(TABLE|VIEW)|ALTER\s+TABLE|UPDATE\s+\w+\s+SET)\b", re.S)


def _modules() -> dict[str, ast.Module]:
    """{"interestgeo.x.y": parsed source} for every module of the core (a package is its __init__)."""
    out = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = ("interestgeo", *path.relative_to(CORE).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(name: str, tree: ast.Module) -> set[str]:
    """Every module name `name` imports when it runs (module level and inside functions)."""
    package = name if (CORE / Path(*name.split(".")[1:]) / "__init__.py").exists() else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *([base] if base else [])])
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(MODULES)
            found.update(submodules)  # `from pkg import module` imports the module
            if len(submodules) < len(node.names):  # ... and `from module import name`, the module
                found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _core_edges(name: str) -> set[str]:
    """The core modules `name` imports (a name that is not a module, e.g. a class, is dropped)."""
    return {m for m in _imported(name, MODULES[name]) if m in MODULES and m != name and m != "interestgeo"}


def test_the_core_never_imports_streamlit_or_the_pages() -> None:
    offenders = {name: sorted(m for m in _imported(name, tree) if m.split(".")[0] in ("streamlit", "pages", "app"))
                 for name, tree in MODULES.items()}
    assert {n: m for n, m in offenders.items() if m} == {}


def test_the_core_import_graph_has_no_cycle() -> None:
    graph = {name: _core_edges(name) for name in MODULES}
    assert sum(len(e) for e in graph.values()) > 50  # the graph was read (lazy imports included)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt] if nxt in path else [*path, nxt]
            if nxt not in state and (found := cycle_from(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            assert (found := cycle_from(start, [start])) is None, " -> ".join(found)


def test_leaf_modules_import_nothing_above_them() -> None:
    below = {f"interestgeo.{m}" for m in BELOW_LEAVES}
    for leaf in sorted(LEAVES):
        assert _core_edges(f"interestgeo.{leaf}") <= below, leaf
    assert _core_edges("interestgeo.schema") == set()


def test_no_module_level_getattr() -> None:
    lazy = [name for name, tree in MODULES.items()
            if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body)]
    assert lazy == []


def _sql_strings(tree: ast.Module) -> list[str]:
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
        elif isinstance(node, ast.JoinedStr):  # an f-string: its literal parts joined
            texts.append(" ".join(v.value for v in node.values if isinstance(v, ast.Constant)))
    return [t for t in texts if SQL.search(t)]


def test_sql_lives_only_in_the_store_package() -> None:
    in_store = {name: _sql_strings(tree) for name, tree in MODULES.items() if name.startswith("interestgeo.store")}
    found = [s for strings in in_store.values() for s in strings]
    assert len(found) >= 20 and any("CREATE TABLE" in s for s in found) and any("INSERT INTO" in s for s in found)
    outside = {name: _sql_strings(tree) for name, tree in MODULES.items() if not name.startswith("interestgeo.store")}
    assert {name: s[:2] for name, s in outside.items() if s} == {}
