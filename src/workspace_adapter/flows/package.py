"""Flow packages: find them, load their ``flow.toml``, and match events to their steps.

A flow package is a folder with a ``flow.toml`` under ``<root>/.codex/flows/`` or
``<root>/flows/``, then the built-in ones shipped in :mod:`workspace_adapter.flows.builtin`
(which also binds workspace.toml's forks to packages). Loading resolves every path against the
package folder and compiles each trigger's JSON Schema once, so matching an event is a string
compare plus one validator call per candidate step.

Every manifest codex-flows accepts loads here too: ``version`` a number or a string (handed to
steps unchanged), a ``[guidance]`` table, steps without a trigger (they never match),
``code-mode`` steps (refused when they run, not when they load). A key neither format knows is a
warning (:attr:`FlowPackage.warnings`), never a reason to drop the package, since codex-flows
ignores it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import jsonschema
import msgspec

from workspace_adapter.base.errors import UserError
from workspace_adapter.base.tomlpos import TomlPositions
from workspace_adapter.flows import builtin

FLOW_DIRS: tuple[str, ...] = (".codex/flows", "flows")
DEFAULT_TIMEOUT_MS = 300_000

Runner = Literal["python", "command", "bun", "code-mode"]
# Runners that name a script file (codex-flows' runners are both of that kind).
SCRIPT_RUNNERS: frozenset[str] = frozenset({"python", "bun", "code-mode"})


class FlowConfigError(UserError):
    """One problem in one ``flow.toml``, printed as one line: file, line, key path, what to do."""

    def __init__(
        self, file: Path | str, problem: str, *, line: int | None = None, key: str | None = None
    ) -> None:
        self.file = str(file)
        self.line = line
        self.key = key
        self.problem = problem
        where = self.file if line is None else f"{self.file}:{line}"
        text = f"{where}: {key}: {problem}" if key else f"{where}: {problem}"
        super().__init__(text)

    def __str__(self) -> str:
        return self.message


# --- the file format -------------------------------------------------------------------------


class _TriggerSpec(msgspec.Struct, kw_only=True):
    type: str
    schema: str | None = None


class _GuidanceSpec(msgspec.Struct, kw_only=True):
    # codex-flows keeps the string entries and drops the rest; so do we.
    skills: list[Any] = msgspec.field(default_factory=list)


class _StepSpec(msgspec.Struct, kw_only=True):
    name: str
    runner: Runner
    trigger: _TriggerSpec | None = None
    script: str | None = None
    command: list[str] | None = None
    cwd: str | None = None
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    concurrency: int = 1


class _FlowSpec(msgspec.Struct, kw_only=True):
    name: str
    version: str | int | float = "0.0.0"
    description: str = ""
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    guidance: _GuidanceSpec | None = None
    steps: list[_StepSpec] = msgspec.field(default_factory=list)


# The keys each table of the manifest knows; anything else is a warning.
_KNOWN_KEYS: dict[str, frozenset[str]] = {
    "": frozenset(_FlowSpec.__struct_fields__),
    "guidance": frozenset(_GuidanceSpec.__struct_fields__),
    "step": frozenset(_StepSpec.__struct_fields__),
    "trigger": frozenset(_TriggerSpec.__struct_fields__),
}


# --- what the rest of the program uses -------------------------------------------------------


class FlowStep(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a loaded package, every path absolute and its payload validator compiled."""

    name: str
    runner: Runner
    script: Path | None
    command: tuple[str, ...] | None
    cwd: Path
    timeout_ms: int
    concurrency: int
    # None: the step has no trigger and never matches an event (codex-flows allows that).
    trigger_type: str | None
    schema_path: Path | None
    # A compiled jsonschema validator, or None to accept any payload.
    validator: Any = None

    def accepts(self, event: dict[str, Any]) -> bool:
        """True when ``event`` has this step's trigger type and its payload fits the schema."""
        if self.trigger_type is None or event.get("type") != self.trigger_type:
            return False
        if self.validator is None:
            return True
        payload = event.get("payload")
        return bool(self.validator.is_valid({} if payload is None else payload))


class FlowPackage(msgspec.Struct, frozen=True, kw_only=True):
    """A loaded ``flow.toml`` and the folder it lives in."""

    name: str
    # As the manifest wrote it: codex-flows' manifests use a number, ours a string.
    version: str | int | float
    description: str
    root: Path
    config: dict[str, Any]
    steps: tuple[FlowStep, ...]
    guidance_skills: tuple[str, ...] = ()
    # Keys the manifest has that neither format knows: one line each, file:line: key: ignored.
    warnings: tuple[str, ...] = ()

    @property
    def manifest(self) -> Path:
        return self.root / "flow.toml"


class FlowDiscovery(msgspec.Struct, kw_only=True):
    """Every package found under a workspace root, and one error per package that failed."""

    packages: list[FlowPackage]
    errors: list[FlowConfigError]

    @property
    def warnings(self) -> list[str]:
        """Every loaded package's warnings (unknown keys), in package order."""
        return [w for p in self.packages for w in p.warnings]

    def get(self, name: str) -> FlowPackage | None:
        return next((p for p in self.packages if p.name == name), None)


# --- loading ---------------------------------------------------------------------------------

_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_MSGSPEC_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_HINTS = {
    "unknown field": "remove it or fix its spelling",
    "missing required field": "add it",
    "Expected": "fix its value",
    "Invalid enum value": "use one of: python, command, bun, code-mode",
}


def load_flow(folder: Path, *, display_root: Path | None = None) -> FlowPackage:
    """Load the package in ``folder``; raises :class:`FlowConfigError` for its first problem."""
    package, errors = _load(folder, display_root)
    if errors or package is None:
        raise errors[0]
    return package


def discover_flows(root: Path, *, forks: list[dict[str, Any]] | None = None) -> FlowDiscovery:
    """Every package under ``.codex/flows/`` then ``flows/``, then the built-in ones.

    The first of a name wins. ``forks`` (default: read from workspace.toml) are the
    ``[[workspace.forks]]`` entries the packages serve: see :func:`_bind_forks`.
    """
    packages: dict[str, FlowPackage] = {}
    errors: list[FlowConfigError] = []
    for sub in FLOW_DIRS:
        base = root / sub
        if not base.is_dir():
            continue
        seen_here: dict[str, Path] = {}
        for folder in sorted(p for p in base.iterdir() if (p / "flow.toml").is_file()):
            package, problems = _load(folder, root)
            errors.extend(problems)
            if package is None:
                continue
            if package.name in seen_here:
                errors.append(
                    FlowConfigError(
                        _show(package.manifest, root),
                        f"flow name {package.name!r} is already used by "
                        f"{_show(seen_here[package.name], root)}; rename one of them",
                        line=_line_of_key(package.manifest, ["name"]),
                        key="name",
                    )
                )
                continue
            seen_here[package.name] = package.manifest
            # ``.codex/flows`` is read first and wins a clash: a test or operator override.
            packages.setdefault(package.name, package)
    if forks is None:
        forks, problem = builtin.workspace_forks(root)
        if problem is not None:
            errors.append(
                FlowConfigError("workspace.toml", f"forks not loaded, no fork is served: {problem}")
            )
    return FlowDiscovery(packages=_bind_forks(list(packages.values()), forks, root), errors=errors)


def _bind_forks(
    packages: list[FlowPackage], forks: list[dict[str, Any]], root: Path
) -> list[FlowPackage]:
    """Hand each package the forks it serves, then add the built-in packages.

    A workspace package whose ``[config]`` names a fork serves it alone: it gets
    ``config.fork`` and ``config.forks = [that entry]``. The built-in fork-maintenance flow,
    present when any fork is configured, gets every fork in ``config.forks`` and matches only
    the events of the others, so one event never starts two runs on one fork.
    """
    if not forks:
        return packages
    bound: list[FlowPackage] = []
    claimed: set[str] = set()
    for package in packages:
        fork = builtin.claimed_fork(package.config, forks, root)
        if fork is not None:
            claimed.add(fork["name"])
            config = {**package.config, "fork": fork["name"], "forks": [fork]}
            # It serves its fork's events only, whatever else its own schema lets through.
            only = builtin.fork_schema([fork])
            steps = tuple(
                msgspec.structs.replace(s, validator=_validator(s.validator, only))
                if s.trigger_type
                else s
                for s in package.steps
            )
            package = msgspec.structs.replace(package, config=config, steps=steps)
        bound.append(package)
    names = {p.name for p in bound}
    for folder in builtin.builtin_folders():
        shipped, _ = _load(folder, None)
        if shipped is None or shipped.name in names:
            continue  # a built-in that fails to load is a packaging bug the tests catch
        package = shipped
        if package.name == builtin.FORK_FLOW:
            document = builtin.fork_schema([f for f in forks if f["name"] not in claimed])
            steps = tuple(
                msgspec.structs.replace(s, validator=_validator(s.validator, document))
                if s.trigger_type
                else s
                for s in package.steps
            )
            package = msgspec.structs.replace(
                package, config={**package.config, "forks": forks}, steps=steps
            )
        bound.append(package)
    return bound


def _validator(own: Any, document: dict[str, Any]) -> Any:
    """A validator of ``document`` and, when there is one, of the step's own schema too."""
    if own is not None:
        document = {"allOf": [own.schema, document]}
    return jsonschema.Draft202012Validator(document)


def matching_steps(
    packages: Iterable[FlowPackage], event: dict[str, Any]
) -> list[tuple[FlowPackage, FlowStep]]:
    """Every step, in package order, whose trigger type and payload schema fit ``event``."""
    return [(p, s) for p in packages for s in p.steps if s.accepts(event)]


def _show(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def _load(
    folder: Path, display_root: Path | None
) -> tuple[FlowPackage | None, list[FlowConfigError]]:
    manifest = folder / "flow.toml"
    shown = _show(manifest, display_root)
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [FlowConfigError(shown, f"cannot read the file ({exc}); fix its permissions")]
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_LINE.search(str(exc))
        problem = _TOML_LINE.sub("", str(exc)).strip()
        return None, [
            FlowConfigError(
                shown,
                f"invalid TOML: {problem}; fix the syntax",
                line=int(found.group(1)) if found else None,
            )
        ]
    try:
        spec = msgspec.convert(raw, _FlowSpec)
    except msgspec.ValidationError as exc:
        return None, [_validation_error(shown, text, str(exc))]
    return _resolve(folder, spec, shown, text, raw)


def _validation_error(shown: str, text: str, error: str) -> FlowConfigError:
    match = _MSGSPEC_PATH.match(error)
    message = match.group("msg") if match else error
    path = (match.group("path") or "") if match else ""
    parts = [p for p in re.split(r"\.|(?=\[)", path) if p]
    unknown = re.search(r"unknown field `([^`]+)`", message)
    missing = re.search(r"missing required field `([^`]+)`", message)
    named = unknown or missing
    key_parts = [*parts, named.group(1)] if named else parts
    key = ".".join(key_parts).replace(".[", "[") or None
    hint = next((h for needle, h in _HINTS.items() if needle in message), "fix it")
    return FlowConfigError(shown, f"{message}; {hint}", line=_line_in(text, key_parts), key=key)


def _resolve(
    folder: Path, spec: _FlowSpec, shown: str, text: str, raw: dict[str, Any]
) -> tuple[FlowPackage | None, list[FlowConfigError]]:
    errors: list[FlowConfigError] = []

    def problem(parts: Sequence[str], message: str) -> None:
        key = ".".join(parts).replace(".[", "[")
        errors.append(FlowConfigError(shown, message, line=_line_in(text, parts), key=key))

    if not spec.name.strip():
        problem(["name"], "must not be empty; give the flow a name")
    if not spec.steps:
        problem(["steps"], "the flow has no [[steps]]; add at least one")
    steps: list[FlowStep] = []
    names: set[str] = set()
    for i, s in enumerate(spec.steps):
        at = ["steps", f"[{i}]"]
        if s.name in names:
            problem([*at, "name"], f"step name {s.name!r} is used twice; make it unique")
        names.add(s.name)
        if s.timeout_ms < 1:
            problem([*at, "timeout_ms"], f"must be a positive number of ms, got {s.timeout_ms}")
        if s.concurrency < 1:
            problem([*at, "concurrency"], f"must be at least 1, got {s.concurrency}")
        script: Path | None = None
        command: tuple[str, ...] | None = None
        if s.runner in SCRIPT_RUNNERS:
            if not s.script:
                problem([*at, "script"], f"runner {s.runner!r} needs `script`; add it")
            else:
                script = (folder / s.script).resolve()
                if not script.is_file():
                    problem([*at, "script"], f"{s.script!r} does not exist in {folder}")
        elif not s.command:
            problem([*at, "command"], "runner 'command' needs a non-empty argv list; add it")
        else:
            command = tuple(s.command)
        cwd = (folder / s.cwd).resolve() if s.cwd else folder.resolve()
        if not cwd.is_dir():
            problem([*at, "cwd"], f"folder {s.cwd!r} does not exist in {folder}")
        schema_path, validator = _compile_schema(
            folder, s.trigger.schema if s.trigger else None, [*at], problem
        )
        steps.append(
            FlowStep(
                name=s.name,
                runner=s.runner,
                script=script,
                command=command,
                cwd=cwd,
                timeout_ms=s.timeout_ms,
                concurrency=s.concurrency,
                trigger_type=s.trigger.type if s.trigger else None,
                schema_path=schema_path,
                validator=validator,
            )
        )
    if errors:
        return None, errors
    package = FlowPackage(
        name=spec.name,
        version=spec.version,
        description=spec.description,
        root=folder.resolve(),
        config=spec.config,
        steps=tuple(steps),
        guidance_skills=tuple(x for x in spec.guidance.skills if isinstance(x, str))
        if spec.guidance
        else (),
        warnings=tuple(_unknown_keys(raw, shown, text)),
    )
    return package, []


def _unknown_keys(raw: dict[str, Any], shown: str, text: str) -> list[str]:
    """One warning line per key that neither codex-flows' manifest nor ours knows."""
    found: list[list[str]] = []

    def check(table: Any, known: frozenset[str], at: list[str]) -> None:
        if isinstance(table, dict):
            found.extend([*at, key] for key in table if key not in known)

    check(raw, _KNOWN_KEYS[""], [])
    check(raw.get("guidance"), _KNOWN_KEYS["guidance"], ["guidance"])
    steps = raw.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        check(step, _KNOWN_KEYS["step"], ["steps", f"[{i}]"])
        if isinstance(step, dict):
            check(step.get("trigger"), _KNOWN_KEYS["trigger"], ["steps", f"[{i}]", "trigger"])
    lines = []
    for parts in found:
        key = ".".join(parts).replace(".[", "[")
        line = _line_in(text, parts)
        where = shown if line is None else f"{shown}:{line}"
        lines.append(f"{where}: {key}: unknown key, ignored; remove it or fix its spelling")
    return lines


def _compile_schema(
    folder: Path, schema: str | None, at: list[str], problem: Any
) -> tuple[Path | None, Any]:
    if schema is None:
        return None, None
    parts = [*at, "trigger", "schema"]
    path = (folder / schema).resolve()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problem(parts, f"schema file {schema!r} does not exist in {folder}")
        return path, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem(parts, f"cannot read JSON Schema {schema!r}: {exc}; fix the file")
        return path, None
    try:
        cls = jsonschema.validators.validator_for(document)
        cls.check_schema(document)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        problem(parts, f"{schema!r} is not a valid JSON Schema at {where}: {exc.message}")
        return path, None
    return path, cls(document)


def _line_of_key(manifest: Path, parts: list[str]) -> int | None:
    try:
        return _line_in(manifest.read_text(encoding="utf-8"), parts)
    except OSError:
        return None


def _line_in(text: str, parts: Sequence[str]) -> int | None:
    """The line of a key path like ``steps [1] trigger type``, else of its deepest table."""
    positions = TomlPositions(text)
    for depth in range(len(parts), 0, -1):
        line = positions.find(".".join(parts[:depth]).replace(".[", "["))
        if line is not None:
            return line
    return None
