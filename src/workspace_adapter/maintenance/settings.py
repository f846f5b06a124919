"""A maintenance run's settings: the fork entry over flow.toml ``[config]``, then env, then
the event's options.

A step's ``flow.config`` is a package's ``[config]`` (the legacy keys below) and, when
workspace.toml configures forks, ``forks``: the ``[[workspace.forks]]`` entries that package
serves, each with its checkout path made absolute. :func:`select_fork` picks the one an event
names (``payload.fork``, else ``payload.repo``) and lays it over the package's keys: a fork entry
wins over ``[config]``. ``CODEX_FLOW_FETCH`` / ``CODEX_FLOW_PUSH`` override the config when
set; ``payload.options.fetch`` is honoured both ways, while ``payload.options.push`` can only
turn pushing off, so a client can never turn pushing on by itself.

A fork may declare a patch series (``patches``, :class:`PatchSeries`): then the maintained
branch is rebuilt as the release plus each patch in order (:mod:`.patches`) instead of rebased.
``payload.options.continuePastConflicts`` lets such a run go on past a patch that conflicts.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from workspace_adapter.base.flags import env_flag

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_SCP_LIKE = re.compile(r"^[\w.-]+@[^:/]+:")
_GLOB = re.compile(r"^[A-Za-z0-9*?\[][A-Za-z0-9._/*?\[\]!-]*$")
_DIGITS = re.compile(r"(\d+)")


class SettingsError(ValueError):
    """A config value the flow cannot work with; the message names the field."""


class PatchSeries(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A fork's patch series, ``patches = {...}`` in its entry; exactly one of the two keys.

    ``branches``: a list of branch names in the order they apply, or one glob whose matches
    apply in the natural order of their names (``patch/2-x`` before ``patch/10-y``). Each
    branch is one patch: its commits since it left the previous release. ``series``: a folder
    of the fork checkout, committed on the maintained branch, holding a quilt ``series`` file
    (one patch file per line, ``#`` comments); plain diffs and ``git format-patch`` mails both.
    """

    branches: str | list[str] | None = None
    series: str | None = None

    def __post_init__(self) -> None:
        problem = _series_problem(self)
        if problem is not None:
            raise ValueError(problem)

    @property
    def is_glob(self) -> bool:
        return isinstance(self.branches, str)


def _series_problem(series: PatchSeries) -> str | None:
    """Why ``series`` cannot be a patch series, from the config alone; None when it can."""
    if series.branches is None and series.series is None:
        return (
            'give `branches` (a list of branch names, or a glob such as "patch/*") or '
            "`series` (a folder with a quilt series file)"
        )
    if series.branches is not None and series.series is not None:
        return "give either `branches` or `series`, not both"
    if isinstance(series.branches, str):
        return _glob_problem(series.branches)
    if series.branches is not None:
        if not series.branches:
            return '`branches` must name at least one branch (or be a glob such as "patch/*")'
        seen: set[str] = set()
        for i, name in enumerate(series.branches):
            if any(c in name for c in "*?["):
                return (
                    f"`branches[{i}]` = {name!r} is a glob; a list names its branches exactly "
                    f'(write `branches = "{name}"` for a glob)'
                )
            if not _usable_name(name):
                return f"`branches[{i}]` = {name!r} is not a usable branch name"
            if name in seen:
                return f"`branches` names {name!r} twice; a patch applies once"
            seen.add(name)
        return None
    folder = series.series or ""
    parts = Path(folder).parts
    if not folder.strip() or Path(folder).is_absolute() or ".." in parts or "\x00" in folder:
        return (
            f"`series` = {folder!r} must be a folder inside the fork checkout, "
            'e.g. "debian/patches"'
        )
    return None


def _glob_problem(glob: str) -> str | None:
    bad = f"`branches` = {glob!r} is not a usable glob of branch names"
    if not _GLOB.match(glob) or ".." in glob or glob.endswith(("/", ".lock")) or "//" in glob:
        return f"{bad} (letters, digits, '.', '_', '-', '/' and the wildcards * ? [...])"
    depth = 0
    for char in glob:
        if char == "[":
            if depth:
                return f"{bad} ('[' inside '[...]')"
            depth = 1
        elif char == "]" and depth:
            depth = 0
    if depth:
        return f"{bad} (a '[' is not closed)"
    return None


def _usable_name(name: str) -> bool:
    return (
        bool(_NAME.match(name))
        and ".." not in name
        and "//" not in name
        and not (name.endswith(("/", ".lock")))
    )


def natural_key(name: str) -> list[tuple[int, int | str]]:
    """Sort key of a name with its digit runs compared as numbers: ``2-x`` before ``10-y``."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(name)]


class ForkFields(msgspec.Struct, kw_only=True, frozen=True):
    """The keys of a ``[[workspace.forks]]`` entry, with their defaults: one definition for
    workspace.toml's schema and for the entry a step receives."""

    name: str
    path: str
    branch: str = "main"
    upstream_remote: str = "upstream"
    upstream_url: str | None = None
    release_tags: str = "*"
    verify_commands: list[str] = msgspec.field(default_factory=list)
    push_remotes: list[str] = msgspec.field(default_factory=list)
    push: bool = False
    fetch: bool = True
    canonical_remote: str | None = None
    candidates_remote: str | None = None
    repo: str | None = None
    patches: PatchSeries | None = None


class ForkEntry(ForkFields, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One ``[[workspace.forks]]`` entry as a step receives it (``path`` already absolute)."""

    workspace_root: str | None = None


class FlowConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``[config]`` of ``flows/patch-moi-harness/flow.toml``; defaults are the tutorial's values.

    ``fork`` names the configured fork a workspace package maintains; ``forks`` is filled in
    by flow discovery, never written by hand. The last five keys come from a fork entry.
    """

    fork_repo: str = "harness/fork"
    fork_repo_full_name: str = "matamune-peezy/patch-moi-harness"
    target_branch: str = "main"
    upstream_remote: str = "upstream"
    upstream_repo_url: str = "harness/remotes/upstream.git"
    expected_repo: str = "peezy-tech/patch-moi-harness"
    fetch: bool = True
    push: bool = False
    push_remotes: list[str] = msgspec.field(default_factory=lambda: ["origin", "jojo"])
    verify_commands: list[str] = msgspec.field(
        default_factory=lambda: ["npm test", "npm run pack:dry-run"]
    )
    fork: str | None = None
    forks: list[ForkEntry] = msgspec.field(default_factory=list)
    release_tags: str | None = None
    canonical_remote: str | None = None
    candidates_remote: str | None = None
    patches: PatchSeries | None = None


class ForkNotConfigured(ValueError):
    """The event names no fork this flow serves; the run is ``skipped`` with this reason."""


class MaintenanceSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Everything one maintenance run needs, paths absolute and switches decided."""

    workspace_root: Path
    fork_path: Path
    fork_repo: str
    fork_repo_full_name: str
    target_branch: str
    upstream_remote: str
    upstream_repo_url: str
    expected_repo: str
    fetch: bool
    push: bool
    push_remotes: tuple[str, ...]
    verify_commands: tuple[str, ...]
    # The configured fork (None: a package with only [config]); selected by payload.fork.
    fork_name: str | None = None
    release_tags: str | None = None
    canonical_remote: str | None = None
    candidates_remote: str | None = None
    patches: PatchSeries | None = None
    # payload.options.continuePastConflicts: a conflicting patch is skipped, not the end.
    continue_past_conflicts: bool = False


def load_config(raw: Mapping[str, Any] | None) -> FlowConfig:
    """Validate ``[config]``; a bad value raises :class:`SettingsError` naming the key."""
    try:
        config = msgspec.convert(dict(raw or {}), FlowConfig)
    except msgspec.ValidationError as exc:
        text = str(exc)
        where = text.rsplit("`$.", 1)[-1].rstrip("`") if "`$." in text else None
        prefix = f"flow.toml [config] `{where}`: " if where else "flow.toml [config]: "
        raise SettingsError(prefix + text.split(" - at ")[0]) from None
    for key in ("target_branch", "upstream_remote"):
        _check_name(key, getattr(config, key))
    for i, remote in enumerate(config.push_remotes):
        _check_name(f"push_remotes[{i}]", remote)
    for key in ("fork_repo", "upstream_repo_url", "expected_repo"):
        if not getattr(config, key).strip():
            raise SettingsError(f"flow.toml [config] `{key}` must not be empty")
    for fork in config.forks:
        for key in ("branch", "upstream_remote"):
            _check_name(f"forks.{fork.name}.{key}", getattr(fork, key))
        for i, remote in enumerate(fork.push_remotes):
            _check_name(f"forks.{fork.name}.push_remotes[{i}]", remote)
    return config


def select_fork(config: FlowConfig, payload: Mapping[str, Any] | None) -> FlowConfig:
    """The config for the fork the event names, the fork entry laid over the package's keys.

    Without ``forks`` (a package with only ``[config]``) the config is returned as it is.
    Raises :class:`ForkNotConfigured` when the event names none of ``forks``, and
    :class:`SettingsError` when a name the run would hand to git holds a NUL.
    """
    payload = payload or {}
    _check_release_names(payload)
    if not config.forks:
        return config
    named, repo = payload.get("fork"), payload.get("repo")
    if isinstance(named, str):
        fork = next((f for f in config.forks if f.name == named), None)
    else:
        fork = next((f for f in config.forks if f.repo is not None and f.repo == repo), None)
    if fork is None:
        what = f"fork {named!r}" if isinstance(named, str) else f"repo {repo!r}"
        known = ", ".join(f"{f.name} ({f.repo})" if f.repo else f.name for f in config.forks)
        raise ForkNotConfigured(
            f"event names {what}, which is no configured fork of this flow (forks: {known})"
        )
    # A workspace package that names this fork keeps its own keys where the entry says
    # nothing; the built-in flow's package has none worth keeping (its defaults are the
    # tutorial's).
    own = config.fork is not None and config.fork == fork.name
    return msgspec.structs.replace(
        config,
        fork=fork.name,
        forks=[],
        fork_repo=fork.path,
        fork_repo_full_name=config.fork_repo_full_name if own else fork.name,
        target_branch=fork.branch,
        upstream_remote=fork.upstream_remote,
        upstream_repo_url=fork.upstream_url or (config.upstream_repo_url if own else ""),
        expected_repo=fork.repo or (config.expected_repo if own else ""),
        fetch=fork.fetch,
        push=fork.push,
        push_remotes=list(fork.push_remotes),
        verify_commands=list(fork.verify_commands),
        release_tags=fork.release_tags,
        canonical_remote=fork.canonical_remote,
        candidates_remote=fork.candidates_remote,
        patches=fork.patches if fork.patches is not None else (config.patches if own else None),
    )


def _check_release_names(payload: Mapping[str, Any]) -> None:
    """A NUL cannot go into a git argument: refused here, before any git command runs."""
    for key in ("fork", "repo", "tag", "ref"):
        value = payload.get(key)
        if isinstance(value, str) and "\x00" in value:
            raise SettingsError(
                f"event payload.{key} {value!r} contains a NUL character; send the name as text"
            )


def tag_matches(release_tags: str, tag: str) -> bool:
    """``release_tags`` is a glob, or a regular expression after ``re:``; both match whole tags."""
    if release_tags.startswith("re:"):
        return re.fullmatch(release_tags[3:], tag) is not None
    return fnmatch.fnmatchcase(tag, release_tags)


def _check_name(key: str, value: str) -> None:
    if not _NAME.match(value) or ".." in value:
        raise SettingsError(
            f"flow.toml [config] `{key}` = {value!r} is not a usable git name "
            "(letters, digits, '.', '_', '-', '/'; not starting with '-')"
        )


def resolve_url(url: str, workspace_root: Path) -> str:
    """A relative local path becomes absolute against the workspace root; URLs stay as they are."""
    if "://" in url or _SCP_LIKE.match(url) or Path(url).is_absolute():
        return url
    return os.path.normpath(workspace_root / url)


def _option(options: Mapping[str, Any], key: str) -> bool | None:
    value = options.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        return env_flag(value)
    if isinstance(value, int):
        return value != 0
    return None


def resolve_settings(
    config: FlowConfig,
    *,
    workspace_root: Path,
    payload: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> MaintenanceSettings:
    """Decide fetch and push (config < env < event options) and make paths absolute."""
    env = os.environ if env is None else env
    fetch, push = config.fetch, config.push
    if env.get("CODEX_FLOW_FETCH") is not None:
        fetch = env_flag(env["CODEX_FLOW_FETCH"])
    if env.get("CODEX_FLOW_PUSH") is not None:
        push = env_flag(env["CODEX_FLOW_PUSH"])
    options = (payload or {}).get("options")
    if isinstance(options, Mapping):
        wanted_fetch = _option(options, "fetch")
        if wanted_fetch is not None:
            fetch = wanted_fetch
        if _option(options, "push") is False:
            push = False
    go_on = isinstance(options, Mapping) and bool(_option(options, "continuePastConflicts"))
    root = workspace_root.resolve()
    fork = Path(config.fork_repo).expanduser()
    return MaintenanceSettings(
        workspace_root=root,
        fork_path=fork if fork.is_absolute() else Path(os.path.normpath(root / fork)),
        fork_repo=config.fork_repo,
        fork_repo_full_name=config.fork_repo_full_name,
        target_branch=config.target_branch,
        upstream_remote=config.upstream_remote,
        upstream_repo_url=resolve_url(config.upstream_repo_url, root)
        if config.upstream_repo_url
        else "",
        expected_repo=config.expected_repo,
        fetch=fetch,
        push=push,
        push_remotes=tuple(config.push_remotes),
        verify_commands=tuple(config.verify_commands),
        fork_name=config.fork if not config.forks else None,
        release_tags=config.release_tags,
        canonical_remote=config.canonical_remote,
        candidates_remote=config.candidates_remote,
        patches=config.patches,
        continue_past_conflicts=go_on,
    )
