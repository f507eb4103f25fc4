"""vitzoo's modules import each other without cycles: the graph of every import statement (module
level or inside functions) over vitzoo/ and recipes/ is a DAG, and the library never imports the scripts. A package's own __init__ running
before its submodules is not an edge; `from package import name` is an edge to the submodule
`package.name` when there is one, else to the package."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules() -> dict[str, str]:
    found = {}
    for top in ("vitzoo", "recipes"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for file in files:
                if file.endswith(".py"):
                    path = os.path.join(folder, file)
                    parts = os.path.relpath(path, os.path.join(ROOT, top))[:-3].split(os.sep)
                    name = ".".join([top, *parts])
                    found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:
                    edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        graph[name] = {edge for edge in edges if edge in known and edge != name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    found = cycle(import_graph())
    assert found is None, " -> ".join(found)


def test_the_library_never_imports_the_scripts():
    graph = import_graph()
    found = sorted(f"{name} -> {edge}" for name, edges in graph.items() if name.startswith("vitzoo")
                   for edge in edges if edge.startswith("recipes"))
    assert not found, found


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_every_package_is_shipped():
    """pyproject.toml lists its packages one by one: a new subpackage must be listed, or a regular
    (non-editable) install lacks it."""
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        listed = set(tomllib.load(handle)["tool"]["setuptools"]["packages"])
    packages = {name for name, path in modules().items() if path.endswith("__init__.py") and name.startswith("vitzoo")}
    packages |= {"vitzoo.model_cards"}
    assert packages <= listed, sorted(packages - listed)
