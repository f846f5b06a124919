"""The house rules of the README's architecture section, checked on the source itself.

Every import counts: module level, inside functions, and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "workspace_adapter"
ROOT = "workspace_adapter"


def _module_name(path: Path) -> str:
    parts = [ROOT, *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(path: Path) -> Iterator[str]:
    """Every module name ``path`` imports, ours and others', resolved to absolute names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield module
            for alias in node.names:
                yield f"{module}.{alias.name}"


@functools.cache
def _edges() -> dict[str, set[str]]:
    """Module → the modules of ours it imports (a name that is a submodule counts as it)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph[name] = {m for m in _imported(path) if m in MODULES and m != name}
    return graph


def _foreign(name: str) -> set[str]:
    return {m.split(".")[0] for m in _imported(MODULES[name]) if not m.startswith(ROOT)}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _in(name: str, *rooms: str) -> bool:
    return any(name == f"{ROOT}.{room}" or name.startswith(f"{ROOT}.{room}.") for room in rooms)


def test_the_import_graph_has_no_cycle() -> None:
    assert _find_cycle(_edges()) is None, " -> ".join(_find_cycle(_edges()) or [])


def test_the_checker_sees_a_cycle_and_a_forbidden_edge() -> None:
    # The rules below are only as good as the graph: check the graph reader on a known case.
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    assert f"{ROOT}.base.errors" in _edges()[f"{ROOT}.cli"]


@pytest.mark.parametrize("module", ["protocol", "backend.passthrough"])
def test_the_wire_formats_are_sans_io(module: str) -> None:
    io = {"asyncio", "anyio", "socket", "websockets", "uvicorn", "starlette", "selectors"}
    assert not (_foreign(f"{ROOT}.{module}") & io)


@pytest.mark.parametrize(
    ("rooms", "forbidden", "why"),
    [
        (("maintenance",), ("backend", "cli", "commands", "loops"), "the fork engine"),
        (("flows",), ("backend", "cli", "commands", "loops", "cluster"), "the step runner"),
        (("cluster",), ("backend", "cli", "commands", "loops", "local"), "the Celery executor"),
        (("backend",), ("cli", "commands", "loops", "local"), "the daemon"),
        (("local", "sources", "service"), ("backend", "loops"), "tasks and release watchers"),
        (
            ("base",),
            (
                "backend",
                "cli",
                "client",
                "cluster",
                "commands",
                "events",
                "flows",
                "harness",
                "local",
                "loops",
                "maintenance",
                "protocol",
                "service",
                "sources",
            ),
            "base helpers",
        ),
    ],
)
def test_rooms_import_only_downwards(
    rooms: tuple[str, ...], forbidden: tuple[str, ...], why: str
) -> None:
    wrong = sorted(
        f"{source} -> {target}"
        for source, targets in _edges().items()
        if _in(source, *rooms)
        for target in targets
        if _in(target, *forbidden)
    )
    assert wrong == [], f"{why} must not import {', '.join(forbidden)}"
