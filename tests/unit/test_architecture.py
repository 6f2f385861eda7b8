"""The import picture: folders are layers, imports only go down, and no module imports itself in a circle.

Every ``import`` statement counts, including those inside functions: a lazy import hides a circle from the
interpreter, not from the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: lowest first; a module may import its own layer and the layers before it
LAYERS = ("core", "protocol", "backends", "hardware", "config", "repository", "serving", "server", "cli")
PACKAGE_FACE = {"edge_runner", "edge_runner.__main__"}


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in ``path`` that names a module of ``known``."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno
                break


def _graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {t for t, _ in _imports(name, path, known)}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def _layer(module: str) -> int:
    parts = module.split(".")
    if module in PACKAGE_FACE:
        return -1 if module == "edge_runner" else len(LAYERS)
    return LAYERS.index(parts[1])


def test_root_holds_only_the_package_face() -> None:
    flat = sorted(p.name for p in (ROOT / "edge_runner").glob("*.py"))
    assert flat == ["__init__.py", "__main__.py"]
    folders = sorted(p.name for p in (ROOT / "edge_runner").iterdir() if (p / "__init__.py").is_file())
    assert folders == sorted(LAYERS)


def test_imports_only_go_down_the_layers() -> None:
    modules = _modules("edge_runner")
    known = set(modules)
    upward = []
    for name, path in modules.items():
        for target, line in _imports(name, path, known):
            if _layer(target) > _layer(name):
                upward.append(f"{path.relative_to(ROOT)}:{line} ({name} imports {target})")
    assert upward == []


@pytest.mark.parametrize("package", ["edge_runner", "converters"])
def test_no_import_circles(package: str) -> None:
    assert _cycles(_graph(package)) == []


def test_the_runtime_never_imports_the_converters() -> None:
    modules = _modules("edge_runner")
    offending = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offending += [f"{name}: {n}" for n in names if n == "converters" or n.startswith("converters.")]
    # The CLI hands off to the converter package, lazily, in two places only: the `convert` verb, and the
    # conversion of a --model-path source on first use (cli/prepare.py). The server layers never do.
    assert sorted(offending) == [
        "edge_runner.cli.main: converters.cli",
        "edge_runner.cli.prepare: converters.cli",
        "edge_runner.cli.prepare: converters.errors",
        "edge_runner.cli.prepare: converters.options",
        "edge_runner.cli.prepare: converters.sources.detect",
    ]


def test_the_checker_sees_a_circle_and_an_upward_import() -> None:
    """The checks above must be able to fail."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("edge_runner.server.app") > _layer("edge_runner.serving.model_manager")
    assert _layer("edge_runner.core.errors") < _layer("edge_runner.backends.registry")
