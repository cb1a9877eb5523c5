"""The house rules a newcomer relies on: the core imports no Dagster, its packages import each
other without cycles, and tests and benchmarks share fixtures only through the library."""

from __future__ import annotations

import ast
from pathlib import Path

from autointerp.config.settings import PROJECT_ROOT

CORE = PROJECT_ROOT / "autointerp"


def _module(path: Path) -> str:
    name = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Modules imported at a file's top level (imports inside functions are deferred)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_core_imports_no_dagster():
    offenders = [
        _module(path)
        for path in CORE.rglob("*.py")
        for imported in _imports(path)
        if imported.split(".")[0] in ("dagster", "assets", "resources", "pipelines")
    ]
    assert offenders == []


def test_core_modules_import_each_other_without_cycles():
    graph = {
        _module(p): {m for m in _imports(p) if m.startswith("autointerp")}
        for p in CORE.rglob("*.py")
    }
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for child in graph.get(module, ()):
            assert state.get(child) != 1, f"import cycle: {' -> '.join([*path, child])}"
            if child in graph and not state.get(child):
                visit(child, [*path, child])
        state[module] = 2

    for module in graph:
        if not state.get(module):
            visit(module, [module])


def test_benchmarks_never_import_tests():
    offenders = [
        path.name
        for path in (PROJECT_ROOT / "benchmarks").glob("*.py")
        if any(m.split(".")[0] == "tests" for m in _imports(path))
    ]
    assert offenders == []
