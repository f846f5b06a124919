"""workspace.toml's schema and the checks behind its error messages.

The msgspec structs below are the schema; a valid entry becomes the plain value of
:mod:`workspace_adapter.local.config` that the rest of the program reads.

Every problem is one line, ``file:line: key.path: problem``. tomllib keeps no positions, so
:mod:`workspace_adapter.base.tomlpos` finds the line of an entry's header, or of the key inside it,
by scanning the raw text. Each task and source entry is checked on its own, so every bad entry
is reported at once. Nothing else in the program validates config.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Literal

import msgspec

from workspace_adapter.base.status import OUTCOMES
from workspace_adapter.base.tomlpos import TomlPositions
from workspace_adapter.cluster.brokerurl import broker_problem
from workspace_adapter.local.config import (
    DEFAULT_TIMEOUT,
    EventTemplate,
    ExecutorConfig,
    ForkConfig,
    NotifyConfig,
    SourceConfig,
    TaskConfig,
    WorkspaceConfig,
    duration_seconds,
)
from workspace_adapter.maintenance.settings import ForkFields

TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
# A git remote or branch name as the fork engine accepts it (no leading '-', no '..').
GIT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
DURATION_RE = re.compile(r"(\d+)([smh])")
EXIT_CODE_RE = re.compile(r"[1-9][0-9]{0,2}")


class EventSchema(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A flow task's ``event`` table (:class:`~workspace_adapter.local.config.EventTemplate`)."""

    type: str | None = None
    source: str | None = None
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


class TaskSchema(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One ``[[workspace.tasks]]`` entry (:class:`~workspace_adapter.local.config.TaskConfig`)."""

    id: str
    kind: Literal["command", "flow"]
    description: str | None = None
    enabled: bool = True
    schedule: str | None = None
    catchup: Literal["none", "latest", "all"] = "latest"
    timeout: str = DEFAULT_TIMEOUT
    command: list[str] | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    statuses: dict[str, str] = msgspec.field(default_factory=dict)
    flow: str | None = None
    wait: bool = True
    event: EventSchema | None = None

    def value(self, line: int) -> TaskConfig:
        fields = msgspec.structs.asdict(self)
        # TOML keys are strings; task_rules made sure each is an exit code before this counts.
        fields["statuses"] = {int(k): v for k, v in self.statuses.items() if k.isdecimal()}
        if self.event is not None:
            fields["event"] = EventTemplate(**msgspec.structs.asdict(self.event))
        return TaskConfig(**fields, line=line)


class SourceSchema(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One ``[[workspace.sources]]`` entry (``config.SourceConfig``).

    A source that names its ``fork`` takes ``url``, ``repo`` and ``tag_pattern`` from the fork
    when it leaves them out, and its events carry ``payload.fork``.
    """

    id: str
    kind: Literal["git-tags", "feed"]
    url: str | None = None
    repo: str | None = None
    fork: str | None = None
    tag_pattern: str | None = None
    interval: str = "5m"
    prime_only: bool = True
    event_type: str = "upstream.release"
    payload: dict[str, Any] = msgspec.field(default_factory=dict)

    def value(self, line: int) -> SourceConfig:
        fields = msgspec.structs.asdict(self)
        # source_rules made sure both are known (from the entry or its fork) before this.
        fields["url"] = self.url or ""
        fields["repo"] = self.repo or ""
        return SourceConfig(**fields, line=line)


class ForkSchema(ForkFields, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One ``[[workspace.forks]]`` entry (:class:`~workspace_adapter.local.config.ForkConfig`);
    its keys are the fork engine's (:class:`~workspace_adapter.maintenance.settings.ForkFields`)
    plus ``expected_repo``, the older name of ``repo``."""

    expected_repo: str | None = None

    def value(self, line: int) -> ForkConfig:
        fields = msgspec.structs.asdict(self)
        expected = fields.pop("expected_repo")
        fields["repo"] = self.repo if self.repo is not None else expected
        # Plain values: the validated-config cache stores the entry with marshal.
        fields["patches"] = None if self.patches is None else msgspec.to_builtins(self.patches)
        return ForkConfig(**fields, line=line)


class NotifySchema(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[workspace.notify]`` (:class:`~workspace_adapter.local.config.NotifyConfig`)."""

    command: list[str] | None = None


class ExecutorSchema(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[workspace.executor]`` (:class:`~workspace_adapter.local.config.ExecutorConfig`);
    ``direct`` is codex-flows' name for ``local``."""

    kind: Literal["local", "direct", "celery"] = "local"
    broker: str | None = None


_WORKSPACE_KEYS = ("name", "timezone", "tasks", "forks", "sources", "notify", "executor")
_COMMAND_ONLY = ("command", "env", "statuses")
_FLOW_ONLY = ("flow", "wait", "event")


class Checker:
    """Collects problems while converting the parsed TOML into structs."""

    def __init__(self, shown: str, text: str) -> None:
        self.shown = shown
        self.text = text
        self._positions: TomlPositions | None = None
        self._headers: dict[str, list[int]] = {}
        self.problems: list[str] = []
        self._forks: dict[str, ForkConfig] = {}

    @property
    def pos(self) -> TomlPositions:
        # Scanning every key's position is only worth it once there is a problem to place.
        if self._positions is None:
            self._positions = TomlPositions(self.text)
        return self._positions

    def header_line(self, table: str, index: int) -> int:
        """The line of the ``index``-th ``[[workspace.<table>]]`` header, by a quick scan."""
        if table not in self._headers:
            pattern = re.compile(rf"(?m)^[ \t]*\[\[[ \t]*workspace[ \t]*\.[ \t]*{table}[ \t]*\]\]")
            lines, line, pos = [], 1, 0
            for match in pattern.finditer(self.text):
                line += self.text.count("\n", pos, match.start())
                pos = match.start()
                lines.append(line)
            self._headers[table] = lines
        lines = self._headers[table]
        # An inline `tasks = [...]` array has no headers: fall back to the full scanner.
        return lines[index] if index < len(lines) else self.pos.entry_header(table, index)

    def add(self, line: int, key_path: str, problem: str) -> None:
        self.problems.append(f"{self.shown}:{line}: {key_path}: {problem}")

    def workspace(self, data: dict[str, Any], path: Path, root: Path) -> WorkspaceConfig:
        for key in data:
            if key != "workspace":
                self.add(
                    self.pos.top_key(key), key, "unknown key (everything lives under [workspace])"
                )
        ws = data.get("workspace")
        if ws is None:
            self.add(1, "workspace", "missing [workspace] table")
            ws = {}
        if not isinstance(ws, dict):
            self.add(self.pos.top_key("workspace"), "workspace", "must be a table")
            ws = {}
        for key in ws:
            if key not in _WORKSPACE_KEYS:
                self.add(
                    self.pos.workspace_key(key),
                    f"workspace.{key}",
                    f"unknown key (allowed: {', '.join(_WORKSPACE_KEYS)})",
                )
        name = ws.get("name", root.name)
        if not isinstance(name, str) or not name.strip():
            self.add(self.pos.workspace_key("name"), "workspace.name", "must be a non-empty string")
            name = root.name
        timezone = ws.get("timezone", "UTC")
        if not isinstance(timezone, str) or not _valid_timezone(timezone):
            self.add(
                self.pos.workspace_key("timezone"),
                "workspace.timezone",
                f"{timezone!r} is not a known IANA time zone (e.g. UTC, Europe/Paris)",
            )
            timezone = "UTC"
        tasks = self.entries(ws, "tasks", TaskSchema, self.task_rules)
        forks = [f for f in self.entries(ws, "forks", ForkSchema, self.fork_rules) if f]
        self.fork_duplicates(ws.get("forks"))
        self._forks = {f.name: f for f in forks}
        sources = self.entries(ws, "sources", SourceSchema, self.source_rules)
        self.duplicates("tasks", ws.get("tasks"))
        self.duplicates("sources", ws.get("sources"))
        notify = None
        if "notify" in ws:
            notify = self.notify(ws["notify"])
        executor = self.executor(ws["executor"]) if "executor" in ws else None
        return WorkspaceConfig(
            path=path,
            root=root,
            name=name,
            timezone=timezone,
            tasks=[t for t in tasks if t is not None],
            sources=[s for s in sources if s is not None],
            notify=notify,
            forks=forks,
            executor=executor,
        )

    def entries(self, ws: dict[str, Any], table: str, struct: Any, rules: Any) -> list[Any]:
        raw = ws.get(table, [])
        if not isinstance(raw, list):
            self.add(
                self.pos.workspace_key(table), f"workspace.{table}", "must be an array of tables"
            )
            return []
        out: list[Any] = []
        for index, entry in enumerate(raw):
            key_path = f"workspace.{table}[{index}]"
            header = self.pos.entry_header(table, index)
            if not isinstance(entry, dict):
                self.add(header, key_path, "must be a table")
                out.append(None)
                continue
            if table == "sources":
                entry = self.source_from_fork(entry)
            out.append(self.entry(entry, table, index, struct, rules))
        return out

    def source_from_fork(self, raw: dict[str, Any]) -> dict[str, Any]:
        """A source that names its fork takes what it leaves out from the fork, and its events
        carry ``payload.fork`` so they select that fork."""
        fork = self._forks.get(raw["fork"]) if isinstance(raw.get("fork"), str) else None
        if fork is None:
            return raw
        filled = dict(raw)
        if "url" not in raw and fork.upstream_url:
            filled["url"] = fork.upstream_url
        if "repo" not in raw and fork.repo:
            filled["repo"] = fork.repo
        if "tag_pattern" not in raw and raw.get("kind") == "git-tags":
            filled["tag_pattern"] = tag_regex(fork.release_tags)
        payload = raw.get("payload", {})
        if isinstance(payload, dict):
            filled["payload"] = {"fork": fork.name, **payload}
        return filled

    def entry(self, entry: dict[str, Any], table: str, index: int, struct: Any, rules: Any) -> Any:
        """Check one entry key by key, so all its problems are reported, then convert it."""
        key_path = f"workspace.{table}[{index}]"
        before = len(self.problems)

        def line_of(*keys: str) -> int:
            return self.pos.entry_key(table, index, keys)

        # The common case, a valid entry, costs one conversion; only a bad one is taken apart
        # key by key (msgspec stops at its first error, and we want them all).
        try:
            converted = msgspec.convert(entry, struct)
        except msgspec.ValidationError:
            converted = None
        if converted is not None:
            rules(entry, key_path, line_of)
            value = converted.value(self.header_line(table, index))
            return value if len(self.problems) == before else None
        fields = _fields(struct)

        for key, value in entry.items():
            field = fields.get(key)
            if field is None:
                self.add(
                    line_of(key), f"{key_path}.{key}", f"unknown key (allowed: {', '.join(fields)})"
                )
                continue
            if key == "event" and isinstance(value, dict) and "id" in value:
                self.add(
                    line_of("event", "id"),
                    f"{key_path}.event.id",
                    "event ids are generated (workspace:<name>:<task>:<run id>); remove it",
                )
                value = {k: v for k, v in value.items() if k != "id"}
            if key == "env" and isinstance(value, dict):
                # msgspec only says "in one of its values"; name the variable instead.
                for name, item in value.items():
                    if not isinstance(item, str):
                        self.add(
                            line_of("env", name),
                            f"{key_path}.env.{name}",
                            f"expected str, got {_toml_type(item)} (quote the value)",
                        )
                continue
            if key == "statuses" and isinstance(value, dict):
                continue  # task_rules names each bad entry, its exit code quoted
            try:
                msgspec.convert(value, field.type)
            except msgspec.ValidationError as exc:
                sub, problem = _split_validation(exc, field.type)
                self.add(line_of(key, *sub), ".".join([f"{key_path}.{key}", *sub]), problem)
        for name, field in fields.items():
            required = (
                field.default is msgspec.NODEFAULT and field.default_factory is msgspec.NODEFAULT
            )
            if required and name not in entry:
                self.add(self.pos.entry_header(table, index), f"{key_path}.{name}", "is required")
        rules(entry, key_path, line_of)
        if len(self.problems) > before:
            return None
        clean = dict(entry)
        if isinstance(clean.get("event"), dict):
            clean["event"] = {k: v for k, v in clean["event"].items() if k != "id"}
        return msgspec.convert(clean, struct).value(self.header_line(table, index))

    def task_rules(self, raw: dict[str, Any], key_path: str, line_of: Any) -> None:
        """Checks beyond types; each looks only at keys whose type is right."""
        task_id = raw.get("id")
        if isinstance(task_id, str) and not TASK_ID_RE.match(task_id):
            self.add(
                line_of("id"),
                f"{key_path}.id",
                f"{task_id!r} is not a valid id (lowercase letters, digits, '.', '_', '-'; "
                "starting with a letter or digit)",
            )
        self.duration(raw, "timeout", key_path, line_of)
        schedule = raw.get("schedule")
        if isinstance(schedule, str):
            problem = cron_problem(schedule)
            if problem:
                self.add(line_of("schedule"), f"{key_path}.schedule", problem)
        kind = raw.get("kind")
        if kind == "command":
            command = raw.get("command")
            if command is None:
                self.add(line_of("kind"), f"{key_path}.command", "is required for a command task")
            elif isinstance(command, list) and (not command or not command[0]):
                self.add(line_of("command"), f"{key_path}.command", "must name a program (argv)")
            elif isinstance(command, list) and any("\0" in str(arg) for arg in command):
                self.add(line_of("command"), f"{key_path}.command", "must not contain NUL")
            env = raw.get("env")
            for name, value in env.items() if isinstance(env, dict) else ():
                if not name or "=" in name or "\0" in name:
                    problem = f"{name!r} is not a valid environment variable name"
                elif isinstance(value, str) and "\0" in value:
                    problem = "must not contain NUL"
                else:
                    continue
                self.add(line_of("env", name), f"{key_path}.env.{name}", problem)
            self.exit_statuses(raw.get("statuses"), key_path, line_of)
            wrong, other = [k for k in _FLOW_ONLY if k in raw], "flow"
        elif kind == "flow":
            flow = raw.get("flow")
            if flow is None or flow == "":
                self.add(line_of("kind"), f"{key_path}.flow", "is required for a flow task")
            wrong, other = [k for k in _COMMAND_ONLY if k in raw], "command"
        else:
            wrong, other = [], ""
        for key in wrong:
            self.add(line_of(key), f"{key_path}.{key}", f"only applies to {other} tasks")

    def exit_statuses(self, statuses: Any, key_path: str, line_of: Any) -> None:
        """``statuses = { 3 = "needs_intervention" }``: exit codes 1-255 to outcomes."""
        for code, status in statuses.items() if isinstance(statuses, dict) else ():
            if not EXIT_CODE_RE.fullmatch(code) or int(code) > 255:
                problem = f"{code!r} is not an exit code (a whole number from 1 to 255)"
            elif not isinstance(status, str):
                problem = f"expected a status string, got {_toml_type(status)}"
            elif status not in OUTCOMES:
                problem = f"{status!r} is not one of {', '.join(OUTCOMES)}"
            else:
                continue
            self.add(line_of("statuses", code), f'{key_path}.statuses."{code}"', problem)

    def source_rules(self, raw: dict[str, Any], key_path: str, line_of: Any) -> None:
        for key in ("url", "repo"):
            if raw.get(key) is None:
                known = raw.get("fork") in self._forks
                hint = "its fork has none" if known else "or name a `fork` that has it"
                self.add(line_of(key), f"{key_path}.{key}", f"is required ({hint})")
        source_id = raw.get("id")
        if isinstance(source_id, str) and not TASK_ID_RE.match(source_id):
            self.add(line_of("id"), f"{key_path}.id", f"{source_id!r} is not a valid id")
        self.duration(raw, "interval", key_path, line_of)
        fork_name = raw.get("fork")
        if isinstance(fork_name, str) and fork_name not in self._forks:
            names = ", ".join(self._forks) or "none"
            self.add(
                line_of("fork"),
                f"{key_path}.fork",
                f"no fork named {fork_name!r} (configured forks: {names})",
            )
        pattern = raw.get("tag_pattern")
        if isinstance(pattern, str):
            try:
                re.compile(pattern)
            except re.error as exc:
                self.add(line_of("tag_pattern"), f"{key_path}.tag_pattern", f"bad regex: {exc}")

    def fork_rules(self, raw: dict[str, Any], key_path: str, line_of: Any) -> None:
        """A fork's names must be usable by git, its tag pattern must compile."""
        name = raw.get("name")
        if isinstance(name, str) and not TASK_ID_RE.match(name):
            self.add(
                line_of("name"),
                f"{key_path}.name",
                f"{name!r} is not a valid fork name (lowercase letters, digits, '.', '_', '-')",
            )
        for key in ("path", "repo", "expected_repo", "upstream_url"):
            value = raw.get(key)
            if isinstance(value, str) and not value.strip():
                self.add(line_of(key), f"{key_path}.{key}", "must not be empty")
        if "repo" in raw and "expected_repo" in raw:
            self.add(
                line_of("expected_repo"),
                f"{key_path}.expected_repo",
                "give `repo` or `expected_repo`, not both (they are the same setting)",
            )
        for key in ("branch", "upstream_remote", "canonical_remote", "candidates_remote"):
            value = raw.get(key)
            if isinstance(value, str) and (not GIT_NAME_RE.match(value) or ".." in value):
                self.add(line_of(key), f"{key_path}.{key}", f"{value!r} is not a usable git name")
        remotes = raw.get("push_remotes")
        for i, value in enumerate(remotes if isinstance(remotes, list) else []):
            if isinstance(value, str) and (not GIT_NAME_RE.match(value) or ".." in value):
                self.add(
                    line_of("push_remotes"),
                    f"{key_path}.push_remotes[{i}]",
                    f"{value!r} is not a usable git remote name",
                )
        tags = raw.get("release_tags")
        if isinstance(tags, str):
            if not tags.strip() or tags.strip() == "re:":
                self.add(line_of("release_tags"), f"{key_path}.release_tags", "must not be empty")
            elif tags.startswith("re:"):
                try:
                    re.compile(tags[3:])
                except re.error as exc:
                    self.add(
                        line_of("release_tags"), f"{key_path}.release_tags", f"bad regex: {exc}"
                    )

    def fork_duplicates(self, entries: Any) -> None:
        """An event selects its fork by name or by repo: each must name exactly one fork."""
        for key, what in (("name", "fork name"), ("repo", "repo")):
            first: dict[str, int] = {}
            for index, entry in enumerate(entries if isinstance(entries, list) else []):
                if not isinstance(entry, dict):
                    continue
                field = key if key in entry or key == "name" else "expected_repo"
                value = entry.get(field)
                if not isinstance(value, str):
                    continue
                if value in first:
                    self.add(
                        self.pos.entry_key("forks", index, (field,)),
                        f"workspace.forks[{index}].{field}",
                        f"{what} {value!r} is already used by workspace.forks[{first[value]}]; "
                        "an event must select one fork, so make it unique",
                    )
                else:
                    first[value] = index

    def duration(self, raw: dict[str, Any], key: str, key_path: str, line_of: Any) -> None:
        value = raw.get(key)
        if not isinstance(value, str):
            return
        if not DURATION_RE.fullmatch(value):
            problem = f"{value!r} is not a duration like 90s, 15m or 2h"
        elif duration_seconds(value) == 0:
            problem = "must be longer than 0s"
        else:
            return
        self.add(line_of(key), f"{key_path}.{key}", problem)

    def duplicates(self, table: str, entries: Any) -> None:
        first: dict[str, int] = {}
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            entry_id = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(entry_id, str):
                continue
            if entry_id in first:
                self.add(
                    self.pos.entry_key(table, index, ("id",)),
                    f"workspace.{table}[{index}].id",
                    f"duplicate id {entry_id!r} "
                    f"(first used by workspace.{table}[{first[entry_id]}])",
                )
            else:
                first[entry_id] = index

    def notify(self, raw: Any) -> NotifyConfig | None:
        try:
            notify = NotifyConfig(**msgspec.structs.asdict(msgspec.convert(raw, NotifySchema)))
        except msgspec.ValidationError as exc:
            sub, problem = _split_validation(exc, NotifySchema)
            key_path = ".".join(["workspace.notify", *sub])
            line = self.pos.find(key_path) or self.pos.workspace_key("notify")
            self.add(line, key_path, problem)
            return None
        if notify.command is not None and (not notify.command or not notify.command[0]):
            self.add(
                self.pos.workspace_key("notify"), "workspace.notify.command", "must name a program"
            )
        elif notify.command is not None and any("\0" in arg for arg in notify.command):
            self.add(
                self.pos.workspace_key("notify"), "workspace.notify.command", "must not contain NUL"
            )
        return notify

    def executor(self, raw: Any) -> ExecutorConfig | None:
        try:
            schema = msgspec.convert(raw, ExecutorSchema)
        except msgspec.ValidationError as exc:
            field = _fields(ExecutorSchema).get(str(exc).rsplit(".", 1)[-1].rstrip("`"))
            sub, problem = _split_validation(exc, field.type if field else ExecutorSchema)
            key_path = ".".join(["workspace.executor", *sub])
            line = self.pos.find(key_path) or self.pos.workspace_key("executor")
            self.add(line, key_path, problem)
            return None
        refused = None if schema.broker is None else broker_problem(schema.broker)
        if refused is not None:
            line = self.pos.find("workspace.executor.broker") or self.pos.workspace_key("executor")
            self.add(line, "workspace.executor.broker", refused)
            return None
        kind: Literal["local", "celery"] = "celery" if schema.kind == "celery" else "local"
        return ExecutorConfig(kind=kind, broker=schema.broker)


_FIELDS: dict[Any, dict[str, Any]] = {}


def _fields(struct: Any) -> dict[str, Any]:
    """A struct's user-facing fields by name (cached: msgspec re-reads annotations each call)."""
    if struct not in _FIELDS:
        _FIELDS[struct] = {f.name: f for f in msgspec.structs.fields(struct)}
    return _FIELDS[struct]


def _toml_type(value: Any) -> str:
    """The TOML name of a parsed value's type, for "expected str, got ..." messages."""
    import datetime as dt

    for kind, name in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (list, "array"),
        (dict, "table"),
        (dt.datetime, "datetime"),
        (dt.date, "date"),
        (dt.time, "time"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _valid_timezone(name: str) -> bool:
    if name == "UTC":
        return True
    import zoneinfo  # only when needed: zoneinfo costs a few ms at start-up

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def tag_regex(release_tags: str) -> str:
    """A fork's ``release_tags`` (a glob, or a regex after ``re:``) as a full-match regex."""
    if release_tags.startswith("re:"):
        return release_tags[3:]
    import fnmatch

    return fnmatch.translate(release_tags)


@functools.lru_cache(maxsize=1024)  # tasks often share a schedule; cronsim parsing is not free
def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a five-field cron expression cronsim accepts, or None."""
    import datetime as dt

    from cronsim import CronSim, CronSimError

    # cronsim also takes a six-field form with seconds; the spec's schedules have five fields.
    if len(expr.split()) != 5:
        return (
            f"{expr!r} is not a valid cron expression (five fields: minute hour day month weekday)"
        )
    try:
        CronSim(expr, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    except CronSimError as exc:
        return f"{expr!r} is not a valid cron expression ({exc})"
    # cronsim reads a step wider than its field ("*/61") as "once"; crontab rejects it, and so
    # do we, since it is almost always a typo. Only the step is looked at: cronsim did the rest.
    for field, spec in zip(
        ("minute", "hour", "day", "month", "weekday"), expr.split(), strict=True
    ):
        span = {"minute": 60, "hour": 24, "day": 31, "month": 12, "weekday": 7}[field]
        for term in spec.split(","):
            step = term.partition("/")[2]
            if step.isdigit() and int(step) > span:
                return f"{expr!r} is not a valid cron expression (bad {field} step /{step})"
    return None


_PATH_RE = re.compile(r" - at `\$(.*)`$")


def _split_validation(exc: msgspec.ValidationError, field_type: Any) -> tuple[list[str], str]:
    """msgspec's "Expected `int`, got `str` - at `$.a.b`" as (["a", "b"], friendlier text)."""
    text = str(exc)
    sub: list[str] = []
    suffix = ""
    match = _PATH_RE.search(text)
    if match:
        text = text[: match.start()]
        # "$.a.b[2]" names keys and indexes; msgspec writes "[...]" for a dict value.
        for part in re.findall(r"\.([^.\[]+)|\[([^\]]+)\]", match.group(1)):
            if part[0]:
                sub.append(part[0])
            elif sub and part[1] != "...":
                sub[-1] += f"[{part[1]}]"
            elif part[1] == "...":
                suffix = " (in one of its values)"
    text = text.replace("Expected `", "expected ").replace("`, got `", ", got ").rstrip("`")
    text += suffix
    text = text.replace(" | null", "")  # TOML has no null; "or null" would only confuse
    literal = getattr(field_type, "__args__", None)
    if text.startswith("Invalid enum value") and literal:
        text = f"{text.split(' ', 3)[-1]} is not one of {', '.join(map(str, literal))}"
    unknown = re.match(r"Object contains unknown field `(.*)`$", str(exc).split(" - at ")[0])
    if unknown:
        sub.append(unknown.group(1))
        text = "unknown key"
    return sub, text
