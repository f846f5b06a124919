"""workspace.toml: the schema of tasks, sources and notify, and the messages for bad files.

The schema owns its error messages (pre-commit's clientlib style): every problem is one line,
``file:line: key.path: problem``; :mod:`workspace_adapter.local.configcheck` writes them and
:mod:`workspace_adapter.local.configfile` reads the file.
Only msgspec, tomllib and the stdlib are imported here: ``workspace run`` loads this module.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import msgspec

from workspace_adapter.base.errors import EXIT_BAD_INPUT, UserError

TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
DURATION_RE = re.compile(r"(\d+)([smh])")
_DURATION_PARTS = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_TIMEOUT = "30m"
MAX_CATCHUP_SLOTS = 10


class EventTemplate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A flow task's static event table; ``id`` is always generated (SPEC §5)."""

    type: str | None = None
    source: str | None = None
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


class TaskConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
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
    env: dict[str, str] = msgspec.field(default_factory=dict)
    # flow tasks
    flow: str | None = None
    wait: bool = True
    event: EventTemplate | None = None
    line: int = 0  # where the entry starts in the file; filled by the loader, not by users

    @property
    def timeout_seconds(self) -> int:
        return duration_seconds(self.timeout)


class SourceConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One ``[[workspace.sources]]`` entry: an upstream release source (SPEC §9)."""

    id: str
    kind: Literal["git-tags", "feed"]
    url: str
    repo: str
    tag_pattern: str | None = None
    interval: str = "5m"
    prime_only: bool = True
    event_type: str = "upstream.release"
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    line: int = 0


class NotifyConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[workspace.notify]``: a command run when an attempt needs a person (SPEC §9)."""

    command: list[str] | None = None


class WorkspaceConfig(msgspec.Struct, kw_only=True):
    """A loaded, validated workspace.toml."""

    path: Path
    root: Path
    name: str
    timezone: str = "UTC"
    tasks: list[TaskConfig] = msgspec.field(default_factory=list)
    sources: list[SourceConfig] = msgspec.field(default_factory=list)
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
