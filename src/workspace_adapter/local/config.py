"""workspace.toml as loaded: the values of tasks, forks, sources and notify, and the config error.

The values are plain slotted classes (:class:`~workspace_adapter.base.values.Value`), not
msgspec structs: ``workspace run`` and ``tick`` read them from the validated-config cache
without importing msgspec (docs/decisions/0001-stdlib-only-cli-fast-path.md). The schema that
checks a file and owns its error messages (``file:line: key.path: problem``) is
:mod:`workspace_adapter.local.configcheck`; :mod:`workspace_adapter.local.configfile` reads the
file and keeps the cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from workspace_adapter.base.errors import EXIT_BAD_INPUT, UserError
from workspace_adapter.base.values import Value

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_TIMEOUT = "30m"
MAX_CATCHUP_SLOTS = 10

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_NO_STATUSES: Mapping[int, str] = MappingProxyType({})


class EventTemplate(Value):
    """A flow task's static event table; ``id`` is always generated."""

    __slots__ = ("payload", "source", "type")

    def __init__(
        self,
        *,
        type: str | None = None,
        source: str | None = None,
        payload: Mapping[str, Any] = _EMPTY,
    ) -> None:
        self.type = type
        self.source = source
        self.payload = payload


class TaskConfig(Value):
    """One ``[[workspace.tasks]]`` entry; ``line`` is where it starts in the file.

    ``statuses`` maps a command task's non-zero exit codes to the status its run records
    (``{3: "needs_intervention"}``); a code it does not name is ``failed``.
    """

    __slots__ = (
        "catchup",
        "command",
        "description",
        "enabled",
        "env",
        "event",
        "flow",
        "id",
        "kind",
        "line",
        "schedule",
        "statuses",
        "timeout",
        "wait",
    )

    def __init__(
        self,
        *,
        id: str,
        kind: Literal["command", "flow"],
        description: str | None = None,
        enabled: bool = True,
        schedule: str | None = None,
        catchup: Literal["none", "latest", "all"] = "latest",
        timeout: str = DEFAULT_TIMEOUT,
        command: list[str] | None = None,  # command tasks
        env: Mapping[str, str] = _EMPTY,
        statuses: Mapping[int, str] = _NO_STATUSES,
        flow: str | None = None,  # flow tasks
        wait: bool = True,
        event: EventTemplate | None = None,
        line: int = 0,
    ) -> None:
        self.id = id
        self.kind = kind
        self.description = description
        self.enabled = enabled
        self.schedule = schedule
        self.catchup = catchup
        self.timeout = timeout
        self.command = command
        self.env = env
        self.statuses = statuses
        self.flow = flow
        self.wait = wait
        self.event = event
        self.line = line

    @property
    def timeout_seconds(self) -> int:
        return duration_seconds(self.timeout)


class SourceConfig(Value):
    """One ``[[workspace.sources]]`` entry: an upstream release source."""

    __slots__ = (
        "event_type",
        "fork",
        "id",
        "interval",
        "kind",
        "line",
        "payload",
        "prime_only",
        "repo",
        "tag_pattern",
        "url",
    )

    def __init__(
        self,
        *,
        id: str,
        kind: Literal["git-tags", "feed"],
        url: str,
        repo: str,
        tag_pattern: str | None = None,
        interval: str = "5m",
        prime_only: bool = True,
        event_type: str = "upstream.release",
        payload: Mapping[str, Any] = _EMPTY,
        fork: str | None = None,
        line: int = 0,
    ) -> None:
        self.id = id
        self.kind = kind
        self.fork = fork
        self.url = url
        self.repo = repo
        self.tag_pattern = tag_pattern
        self.interval = interval
        self.prime_only = prime_only
        self.event_type = event_type
        self.payload = payload
        self.line = line


class ForkConfig(Value):
    """One ``[[workspace.forks]]`` entry: a fork checkout kept rebased on its upstream's releases.

    ``release_tags`` is a glob, or a regular expression after ``re:``; ``repo`` is what an
    event's ``payload.repo`` says for this fork (written ``repo`` or ``expected_repo``);
    ``patches`` is its patch series as plain values (``{"branches": …}`` or ``{"series": …}``).
    """

    __slots__ = (
        "branch",
        "candidates_remote",
        "canonical_remote",
        "fetch",
        "line",
        "name",
        "patches",
        "path",
        "push",
        "push_remotes",
        "release_tags",
        "repo",
        "upstream_remote",
        "upstream_url",
        "verify_commands",
    )

    def __init__(
        self,
        *,
        name: str,
        path: str,
        branch: str = "main",
        upstream_remote: str = "upstream",
        upstream_url: str | None = None,
        release_tags: str = "*",
        verify_commands: list[str] | None = None,
        push_remotes: list[str] | None = None,
        push: bool = False,
        fetch: bool = True,
        canonical_remote: str | None = None,
        candidates_remote: str | None = None,
        repo: str | None = None,
        patches: dict[str, Any] | None = None,
        line: int = 0,
    ) -> None:
        self.name = name
        self.path = path
        self.branch = branch
        self.upstream_remote = upstream_remote
        self.upstream_url = upstream_url
        self.release_tags = release_tags
        self.verify_commands = [] if verify_commands is None else verify_commands
        self.push_remotes = [] if push_remotes is None else push_remotes
        self.push = push
        self.fetch = fetch
        self.canonical_remote = canonical_remote
        self.candidates_remote = candidates_remote
        self.repo = repo
        self.patches = patches
        self.line = line

    def step_config(self, root: Path) -> dict[str, Any]:
        """The entry as a flow step gets it: plain JSON values, and the root ``path`` is
        relative to."""
        data = self.as_dict()
        del data["line"]
        data["workspace_root"] = str(root)
        return data


class NotifyConfig(Value):
    """``[workspace.notify]``: a command run when an attempt needs a person."""

    __slots__ = ("command",)

    def __init__(self, *, command: list[str] | None = None) -> None:
        self.command = command


class ExecutorConfig(Value):
    """``[workspace.executor]``: where the backend runs flow steps.

    ``kind`` is ``local`` (a subprocess of the backend; ``direct`` is read as ``local``) or
    ``celery`` (Celery workers over the Redis ``broker``).
    """

    __slots__ = ("broker", "kind")

    def __init__(
        self, *, kind: Literal["local", "celery"] = "local", broker: str | None = None
    ) -> None:
        self.kind = kind
        self.broker = broker


class WorkspaceConfig(Value):
    """A loaded, validated workspace.toml."""

    __slots__ = (
        "executor",
        "forks",
        "name",
        "notify",
        "path",
        "root",
        "sources",
        "tasks",
        "timezone",
    )

    def __init__(
        self,
        *,
        path: Path,
        root: Path,
        name: str,
        timezone: str,
        tasks: list[TaskConfig],
        sources: list[SourceConfig],
        notify: NotifyConfig | None = None,
        forks: list[ForkConfig] | None = None,
        executor: ExecutorConfig | None = None,
    ) -> None:
        self.path = path
        self.root = root
        self.name = name
        self.timezone = timezone
        self.tasks = tasks
        self.sources = sources
        self.notify = notify
        self.forks = [] if forks is None else forks
        self.executor = executor

    def fork(self, name: str) -> ForkConfig:
        """The fork called ``name``; exit 2 listing the configured ones otherwise."""
        for fork in self.forks:
            if fork.name == name:
                return fork
        known = ", ".join(f.name for f in self.forks) or "(none: add a [[workspace.forks]] entry)"
        raise UserError(
            f"{self.display_path}: no fork {name!r}; configured forks: {known}", EXIT_BAD_INPUT
        )

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
        """Plain values (the validated-config cache); :meth:`from_json` reads them back."""
        return {
            "path": str(self.path),
            "root": str(self.root),
            "name": self.name,
            "timezone": self.timezone,
            "tasks": [
                {
                    **t.as_dict(),
                    "env": dict(t.env),
                    "statuses": dict(t.statuses),
                    "event": None
                    if t.event is None
                    else {**t.event.as_dict(), "payload": dict(t.event.payload)},
                }
                for t in self.tasks
            ],
            "sources": [{**s.as_dict(), "payload": dict(s.payload)} for s in self.sources],
            "notify": None if self.notify is None else self.notify.as_dict(),
            "forks": [f.as_dict() for f in self.forks],
            "executor": None if self.executor is None else self.executor.as_dict(),
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
            forks=[ForkConfig(**f) for f in data["forks"]],
            executor=ExecutorConfig(**data["executor"]) if data.get("executor") else None,
        )


class ConfigError(UserError):
    """workspace.toml is missing or invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        # error_handler prefixes the first line with "error: "; give every line the prefix.
        super().__init__("\nerror: ".join(problems), EXIT_BAD_INPUT)
        self.problems = problems


def duration_seconds(text: str) -> int:
    """Seconds in a ``^\\d+[smhd]$`` duration; ValueError for anything else.

    Config values are ``[smh]`` only (checked by the schema); ``d`` is for
    ``prune --older-than``. No regular expression: this runs on every ``workspace run``.
    """
    number, unit = text[:-1], text[-1:]
    if not number.isdecimal() or unit not in _UNIT_SECONDS:
        raise ValueError(f"bad duration {text!r}")
    return int(number) * _UNIT_SECONDS[unit]


def display_path(path: Path) -> str:
    """``path`` relative to the cwd when below it (short messages), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
