"""The harness flow's settings: flow.toml ``[config]``, then env, then the event's options.

SPEC §7: ``CODEX_FLOW_FETCH`` / ``CODEX_FLOW_PUSH`` override the config when set;
``payload.options.fetch`` is honoured both ways, while ``payload.options.push`` can only turn
pushing off, so a client can never turn pushing on by itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_SCP_LIKE = re.compile(r"^[\w.-]+@[^:/]+:")


class SettingsError(ValueError):
    """A config value the flow cannot work with; the message names the field."""


class FlowConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``[config]`` of ``flows/patch-moi-harness/flow.toml``; defaults are SPEC §7's values."""

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


def env_flag(value: str) -> bool:
    """SPEC §7: ``1 true yes on`` (any case) are true, anything else false."""
    return value.strip().lower() in TRUE_WORDS


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
    return config


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
    root = workspace_root.resolve()
    fork = Path(config.fork_repo).expanduser()
    return MaintenanceSettings(
        workspace_root=root,
        fork_path=fork if fork.is_absolute() else Path(os.path.normpath(root / fork)),
        fork_repo=config.fork_repo,
        fork_repo_full_name=config.fork_repo_full_name,
        target_branch=config.target_branch,
        upstream_remote=config.upstream_remote,
        upstream_repo_url=resolve_url(config.upstream_repo_url, root),
        expected_repo=config.expected_repo,
        fetch=fetch,
        push=push,
        push_remotes=tuple(config.push_remotes),
        verify_commands=tuple(config.verify_commands),
    )
