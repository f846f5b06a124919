"""workspace.toml: the schema of tasks, sources and notify, and the messages for bad files.

The schema owns its error messages (pre-commit's clientlib style): every problem is one line,
``file:line: key.path: problem``. tomllib keeps no positions, so :mod:`workspace_adapter.tomlpos`
finds the line of an entry's header, or of the key inside it, by scanning the raw text.
Each task and source entry is checked on its own, so every bad entry is reported at once.
Only msgspec, tomllib and the stdlib are imported here: ``workspace run`` loads this module.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from workspace_adapter import paths
from workspace_adapter.errors import EXIT_BAD_INPUT, UserError
from workspace_adapter.tomlpos import TomlPositions

TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
DURATION_RE = re.compile(r"^(\d+)([smh])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
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


_WORKSPACE_KEYS = ("name", "timezone", "tasks", "sources", "notify")
_COMMAND_ONLY = ("command", "env")
_FLOW_ONLY = ("flow", "wait", "event")


def duration_seconds(text: str) -> int:
    """Seconds in a ``^\\d+[smh]$`` duration (already validated)."""
    match = DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"bad duration {text!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def display_path(path: Path) -> str:
    """``path`` relative to the cwd when below it (short messages), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def config_path(root: Path) -> Path | None:
    """``<root>/workspace.toml``, else ``<root>/.codex/workspace.toml``, else None."""
    for name in paths.CONFIG_CANDIDATES:
        candidate = root / name
        if candidate.is_file():
            return candidate
    return None


def load(root: Path) -> WorkspaceConfig:
    """Read and validate the workspace's config; :class:`ConfigError` (exit 2) on any problem."""
    path = config_path(root)
    if path is None:
        raise ConfigError(
            [
                f"no workspace.toml in {root} (nor .codex/workspace.toml); create one, or pass "
                "--workspace-root pointing at the folder that holds it"
            ]
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{display_path(path)}: cannot read: {exc}"]) from None
    return parse(text, path, root)


def parse(text: str, path: Path, root: Path) -> WorkspaceConfig:
    """Validate the TOML ``text`` of ``path``; see :func:`load`."""
    shown = display_path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        line = match.group(1) if match else "1"
        raise ConfigError([f"{shown}:{line}: invalid TOML: {exc}"]) from None
    checker = _Checker(shown, TomlPositions(text))
    config = checker.workspace(data, path, root)
    if checker.problems:
        raise ConfigError(checker.problems)
    return config


class _Checker:
    """Collects problems while converting the parsed TOML into structs."""

    def __init__(self, shown: str, positions: TomlPositions) -> None:
        self.shown = shown
        self.pos = positions
        self.problems: list[str] = []

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
        tasks = self.entries(ws, "tasks", TaskConfig, self.task_rules)
        sources = self.entries(ws, "sources", SourceConfig, self.source_rules)
        self.duplicates("tasks", ws.get("tasks"))
        self.duplicates("sources", ws.get("sources"))
        notify = None
        if "notify" in ws:
            notify = self.notify(ws["notify"])
        return WorkspaceConfig(
            path=path,
            root=root,
            name=name,
            timezone=timezone,
            tasks=[t for t in tasks if t is not None],
            sources=[s for s in sources if s is not None],
            notify=notify,
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
            out.append(self.entry(entry, table, index, struct, rules))
        return out

    def entry(self, entry: dict[str, Any], table: str, index: int, struct: Any, rules: Any) -> Any:
        """Check one entry key by key, so all its problems are reported, then convert it."""
        key_path = f"workspace.{table}[{index}]"
        before = len(self.problems)
        fields = {f.name: f for f in msgspec.structs.fields(struct) if f.name != "line"}

        def line_of(*keys: str) -> int:
            return self.pos.entry_key(table, index, keys)

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
        converted = msgspec.convert(clean, struct)
        converted.line = self.pos.entry_header(table, index)
        return converted

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

    def source_rules(self, raw: dict[str, Any], key_path: str, line_of: Any) -> None:
        source_id = raw.get("id")
        if isinstance(source_id, str) and not TASK_ID_RE.match(source_id):
            self.add(line_of("id"), f"{key_path}.id", f"{source_id!r} is not a valid id")
        self.duration(raw, "interval", key_path, line_of)
        pattern = raw.get("tag_pattern")
        if isinstance(pattern, str):
            try:
                re.compile(pattern)
            except re.error as exc:
                self.add(line_of("tag_pattern"), f"{key_path}.tag_pattern", f"bad regex: {exc}")

    def duration(self, raw: dict[str, Any], key: str, key_path: str, line_of: Any) -> None:
        value = raw.get(key)
        if not isinstance(value, str):
            return
        if not DURATION_RE.match(value):
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
            notify = msgspec.convert(raw, NotifyConfig)
        except msgspec.ValidationError as exc:
            sub, problem = _split_validation(exc, NotifyConfig)
            self.add(
                self.pos.workspace_key("notify"), ".".join(["workspace.notify", *sub]), problem
            )
            return None
        if notify.command is not None and not notify.command:
            self.add(
                self.pos.workspace_key("notify"), "workspace.notify.command", "must not be empty"
            )
        return notify


def _valid_timezone(name: str) -> bool:
    if name == "UTC":
        return True
    import zoneinfo  # only when needed: zoneinfo costs a few ms at start-up

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


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
                text += " (in one of its values)"
    text = text.replace("Expected `", "expected ").replace("`, got `", ", got ").rstrip("`")
    text = text.replace(" | null", "")  # TOML has no null; "or null" would only confuse
    literal = getattr(field_type, "__args__", None)
    if text.startswith("Invalid enum value") and literal:
        text = f"{text.split(' ', 3)[-1]} is not one of {', '.join(map(str, literal))}"
    text = text.replace("Object contains unknown field `", "unknown key `")
    return sub, text
