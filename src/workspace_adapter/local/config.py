"""workspace.toml as loaded: the values of tasks, sources and notify, and the config error.

The values are plain named tuples of the standard library, not msgspec structs: ``workspace
run`` and ``tick`` read them from the validated-config cache without importing msgspec
(docs/decisions/0001-stdlib-only-cli-fast-path.md). The schema that checks a file and owns its
error messages (``file:line: key.path: problem``) is :mod:`workspace_adapter.local.configcheck`;
:mod:`workspace_adapter.local.configfile` reads the file and keeps the cache.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from workspace_adapter.base.errors import EXIT_BAD_INPUT, UserError

TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
DURATION_RE = re.compile(r"(\d+)([smh])")
_DURATION_PARTS = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_TIMEOUT = "30m"
MAX_CATCHUP_SLOTS = 10

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class EventTemplate(NamedTuple):
    """A flow task's static event table; ``id`` is always generated (SPEC §5)."""

    type: str | None = None
    source: str | None = None
    payload: Mapping[str, Any] = _EMPTY


class TaskConfig(NamedTuple):
    """One ``[[workspace.tasks]]`` entry (SPEC §3)."""

    id: str
    kind: Literal["command", "flow"]
    description: str | None = None
    enabled: bool = True
    schedule: str | None = None
    catchup: Literal["none", "latest", "all"] = "latest"
    timeout: str = DEFAULT_TIMEOUT
    # command tasks
    command: list[str] | None = None
    env: Mapping[str, str] = _EMPTY
    # flow tasks
    flow: str | None = None
    wait: bool = True
    event: EventTemplate | None = None
    line: int = 0  # where the entry starts in the file; filled by the loader, not by users

    @property
    def timeout_seconds(self) -> int:
        return duration_seconds(self.timeout)


class SourceConfig(NamedTuple):
    """One ``[[workspace.sources]]`` entry: an upstream release source (SPEC §9)."""

    id: str
    kind: Literal["git-tags", "feed"]
    url: str
    repo: str
    tag_pattern: str | None = None
    interval: str = "5m"
    prime_only: bool = True
    event_type: str = "upstream.release"
    payload: Mapping[str, Any] = _EMPTY
    line: int = 0


class NotifyConfig(NamedTuple):
    """``[workspace.notify]``: a command run when an attempt needs a person (SPEC §9)."""

    command: list[str] | None = None


class WorkspaceConfig(NamedTuple):
    """A loaded, validated workspace.toml."""

    path: Path
    root: Path
    name: str
    timezone: str
    tasks: list[TaskConfig]
    sources: list[SourceConfig]
    notify: NotifyConfig | None = None

    def task(self, task_id: str) -> TaskConfig:
        """The task with ``task_id``; exit 2 listing the known ids otherwise."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        known = ", ".join(t.id for t in self.tasks) or "(none)"
        raise UserError(
            f"{self.display_path}: no task {task_id!r}; known tasks: {known}", EXIT_BAD_INPUT
        )

    @property
    def display_path(self) -> str:
        return display_path(self.path)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (the validated-config cache); :meth:`from_json` reads them back."""
        return {
            "path": str(self.path),
            "root": str(self.root),
            "name": self.name,
            "timezone": self.timezone,
            "tasks": [
                {
                    **t._asdict(),
                    "env": dict(t.env),
                    "event": None
                    if t.event is None
                    else {**t.event._asdict(), "payload": dict(t.event.payload)},
                }
                for t in self.tasks
            ],
            "sources": [{**s._asdict(), "payload": dict(s.payload)} for s in self.sources],
            "notify": None if self.notify is None else self.notify._asdict(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkspaceConfig:
        tasks = [
            TaskConfig(**{**t, "event": EventTemplate(**t["event"]) if t["event"] else None})
            for t in data["tasks"]
        ]
        return cls(
            path=Path(data["path"]),
            root=Path(data["root"]),
            name=data["name"],
            timezone=data["timezone"],
            tasks=tasks,
            sources=[SourceConfig(**s) for s in data["sources"]],
            notify=NotifyConfig(**data["notify"]) if data["notify"] is not None else None,
        )


class ConfigError(UserError):
    """workspace.toml is missing or invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        # error_handler prefixes the first line with "error: "; give every line the prefix.
        super().__init__("\nerror: ".join(problems), EXIT_BAD_INPUT)
        self.problems = problems


def duration_seconds(text: str) -> int:
    """Seconds in a ``^\\d+[smhd]$`` duration; ValueError for anything else.

    Config values are ``[smh]`` only (:data:`DURATION_RE`, checked by the schema); ``d`` is for
    ``prune --older-than``.
    """
    match = _DURATION_PARTS.fullmatch(text)
    if match is None:
        raise ValueError(f"bad duration {text!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def display_path(path: Path) -> str:
    """``path`` relative to the cwd when below it (short messages), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
