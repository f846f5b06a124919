"""The user documentation: every config key is documented, and nothing a user reads points
at internal files or at paths of the machine the docs were written on."""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from workspace_adapter import cli, cliparser
from workspace_adapter.base import errors
from workspace_adapter.base.status import Status
from workspace_adapter.flows import package
from workspace_adapter.local import configcheck

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
SRC = REPO / "src" / "workspace_adapter"

# The table each schema struct describes, as docs/configuration.md heads its section.
WORKSPACE_TABLES: dict[str, type[msgspec.Struct]] = {
    "workspace.tasks": configcheck.TaskSchema,
    "workspace.sources": configcheck.SourceSchema,
    "workspace.forks": configcheck.ForkSchema,
    "workspace.notify": configcheck.NotifySchema,
    "workspace.executor": configcheck.ExecutorSchema,
}
FLOW_ROOT = "flow.toml"

FORBIDDEN = [
    ("a parent-folder link", re.compile(r"\.\./")),
    ("a pointer at the internal spec", re.compile(r"SPEC|§")),
    (
        "an absolute path of a machine",
        re.compile(r"(?<![\w.~-])/(?:home|tmp|work|root|usr|var|opt|mnt|srv|Users)/"),
    ),
]


# --- the schema, walked ----------------------------------------------------------------------


def _structs_in(annotation: Any) -> Iterator[type[msgspec.Struct]]:
    """Every struct an annotation holds: itself, or inside ``X | None``, ``list[X]``, …"""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _structs_in(arg)


def _walk(table: str, struct: type[msgspec.Struct]) -> Iterator[tuple[str, str, type]]:
    """(table, key, struct) for every key of ``struct`` and, recursively, of its sub-tables."""
    for field in msgspec.structs.fields(struct):
        yield table, field.encode_name, struct
        for inner in _structs_in(field.type):
            sub = field.encode_name if table == FLOW_ROOT else f"{table}.{field.encode_name}"
            yield from _walk(sub, inner)


def schema_keys() -> list[tuple[str, str, type]]:
    keys: list[tuple[str, str, type]] = [
        ("workspace", key, dict)
        for key in configcheck._WORKSPACE_KEYS  # the [workspace] table has no struct of its own
    ]
    for table, struct in WORKSPACE_TABLES.items():
        keys.extend(_walk(table, struct))
    keys.extend(_walk(FLOW_ROOT, package._FlowSpec))
    return keys


def test_every_schema_struct_is_walked() -> None:
    """A new struct in the workspace.toml schema must be reachable from a documented table."""
    reached = {struct for _, _, struct in schema_keys()}
    defined = {
        obj
        for _, obj in inspect.getmembers(configcheck, inspect.isclass)
        if issubclass(obj, msgspec.Struct) and obj.__module__ == configcheck.__name__
    }
    missing = sorted(s.__name__ for s in defined - reached)
    assert not missing, f"add these structs to WORKSPACE_TABLES in {Path(__file__).name}: {missing}"


# --- docs/configuration.md, read by section ---------------------------------------------------


def doc_sections(text: str) -> dict[str, str]:
    """Each heading's body, keyed by the first code span of the heading without brackets."""
    sections: dict[str, str] = {}
    parts = re.split(r"(?m)^(#{2,4} .*)$", text)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        span = re.search(r"`([^`]+)`", heading)
        if span:
            sections[span.group(1).strip("[]")] = body
    return sections


def documented_keys(body: str) -> set[str]:
    """The keys named in the first cell of a table's rows."""
    keys: set[str] = set()
    for line in body.splitlines():
        if line.startswith("|"):
            first = line.split("|")[1]
            keys.update(re.findall(r"`([^`]+)`", first))
    return keys


def test_every_config_key_is_in_configuration_md() -> None:
    sections = doc_sections((DOCS / "configuration.md").read_text(encoding="utf-8"))
    missing = []
    for table, key, _ in schema_keys():
        if table not in sections:
            missing.append(f"no section headed `[{table}]`")
        elif key not in documented_keys(sections[table]):
            missing.append(f"{table}: `{key}`")
    assert not missing, "docs/configuration.md lacks: " + "; ".join(sorted(set(missing)))


def test_the_walk_finds_nested_tables() -> None:
    tables = {(table, key) for table, key, _ in schema_keys()}
    assert ("workspace.tasks.event", "payload") in tables
    assert ("steps.trigger", "schema") in tables
    assert ("guidance", "skills") in tables
    assert (FLOW_ROOT, "steps") in tables


# --- the other reference pages -----------------------------------------------------------------


def test_every_status_and_exit_code_is_in_statuses_md() -> None:
    text = (DOCS / "statuses.md").read_text(encoding="utf-8")
    missing = [s.value for s in Status if f"`{s.value}`" not in text]
    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)}
    missing += [f"exit {c}" for c in sorted(codes) if not re.search(rf"(?m)^\| {c} \|", text)]
    assert not missing, f"docs/statuses.md lacks: {missing}"


def environment_variables() -> set[str]:
    """Names the source reads from, or sets in, an environment."""
    name = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            value: Any = None
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("get", "getenv")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                value = node.args[0].value  # os.environ.get("X"), env.get("X"), os.getenv("X")
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                value = node.slice.value  # os.environ["X"], env["X"] = …
            elif (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id.endswith("_ENV") for t in node.targets)
                and isinstance(node.value, ast.Constant)
            ):
                value = node.value.value  # DATA_DIR_ENV = "DATA_DIR", read as environ[…_ENV]
            elif isinstance(node, ast.Constant) and re.fullmatch(
                r"(?:CODEX|WORKSPACE)_[A-Z0-9_]+", str(node.value)
            ):
                value = node.value  # TOKEN_ENV = "CODEX_…", a secret's variable, …
            if isinstance(value, str) and name.fullmatch(value):
                found.add(value)
    return found


def test_every_environment_variable_is_in_environment_md() -> None:
    text = (DOCS / "environment.md").read_text(encoding="utf-8")
    found = environment_variables()
    assert {"CODEX_WORKSPACE_BACKEND_TOKEN", "DATA_DIR", "NO_COLOR"} <= found
    missing = sorted(v for v in found if f"`{v}`" not in text)
    assert not missing, f"docs/environment.md lacks: {missing}"


def test_readme_links_every_docs_page() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in DOCS.glob("*.md") if f"(docs/{p.name})" not in readme]
    assert not missing, f"README.md's Documentation list lacks: {missing}"


# --- nothing a user reads points inwards -------------------------------------------------------


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def command_paths() -> list[tuple[str, ...]]:
    """Every command and subcommand the CLI has, as argv prefixes (``()`` is the top level)."""
    found: list[tuple[str, ...]] = [()]

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append((*prefix, name))
                    walk(sub, (*prefix, name))

    walk(cliparser.build_parser(), ())
    return found


def problems_in(text: str) -> list[str]:
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in FORBIDDEN:
            if pattern.search(line):
                out.append(f"line {number}: {what}: {line.strip()}")
    return out


def test_the_forbidden_patterns_catch_what_they_should() -> None:
    assert problems_in("see ../shared/notes.md")
    assert problems_in("as SPEC §3 says")
    assert problems_in("installed in /usr/local/bin and /home/ann/src")
    assert not problems_in("`~/maint/workspace.toml`, `.workspace/logs/`, `/etc/workspace`")


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_docs_point_at_nothing_internal(path: Path) -> None:
    problems = problems_in(path.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_every_cli_command_is_checked() -> None:
    top = {argv[0] for argv in command_paths() if len(argv) == 1}
    assert top == set(cliparser.COMMANDS)


@pytest.mark.parametrize("argv", command_paths(), ids=lambda a: " ".join(a) or "workspace")
def test_help_points_at_nothing_internal(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert "usage: workspace" in shown
    problems = problems_in(shown)
    assert not problems, "\n".join(problems)


INTERNAL_SPEC = re.compile(r"\bSPEC\b|§|shared/")


def test_the_shipped_source_points_at_nothing_internal() -> None:
    """The package's source ships in the wheel: its comments and docstrings name the user's
    docs, never the internal contract."""
    assert INTERNAL_SPEC.search("the daemon (SPEC §6)") and not INTERNAL_SPEC.search("_MSGSPEC")
    problems = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*"))
        if path.is_file() and path.suffix in {".py", ".mjs", ".toml", ".md", ".json"}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if INTERNAL_SPEC.search(line)
    ]
    assert not problems, "\n".join(problems)
