"""Flow packages that ship with workspace-adapter, and the forks of workspace.toml they serve.

The folders beside this module are package data: each holds a ``flow.toml`` and its step, and is
discovered after a workspace's own ``.codex/flows/`` and ``flows/`` (a workspace package of
the same name wins). ``fork-maintenance`` serves every ``[[workspace.forks]]`` entry; its
trigger matches only events whose ``payload.fork`` or ``payload.repo`` names one of them.

One event never starts two runs on one fork: a workspace package that names a fork in its
``[config]`` (``fork = NAME``, or a ``fork_repo`` that is that fork's checkout) serves that fork
itself, with the fork entry laid over its ``[config]``, and the built-in flow steps aside for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FORK_FLOW = "fork-maintenance"


def builtin_folders() -> list[Path]:
    """The built-in packages' folders, by name."""
    return sorted(p for p in HERE.iterdir() if (p / "flow.toml").is_file())


def workspace_forks(root: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The forks of ``root``'s workspace.toml as steps get them, and the config's problem.

    No workspace.toml is no forks and no problem; an invalid one is no forks and its error.
    """
    from workspace_adapter.local.config import ConfigError
    from workspace_adapter.local.configfile import config_path, load_cached

    if config_path(root) is None:
        return [], None
    try:
        config = load_cached(root, write=False)
    except ConfigError as exc:
        return [], "; ".join(exc.problems)
    resolved = root.resolve()
    return [f.step_config(resolved) for f in config.forks], None


def claimed_fork(
    config: Mapping[str, Any], forks: Sequence[Mapping[str, Any]], root: Path
) -> Mapping[str, Any] | None:
    """The fork a workspace package's ``[config]`` names, if any."""
    named = config.get("fork")
    if isinstance(named, str):
        return next((f for f in forks if f["name"] == named), None)
    checkout = config.get("fork_repo")
    if isinstance(checkout, str) and checkout.strip():
        full = _absolute(checkout, root)
        return next((f for f in forks if _absolute(f["path"], root) == full), None)
    return None


def _absolute(path: str, root: Path) -> str:
    found = Path(path).expanduser()
    return os.path.normpath(found if found.is_absolute() else root.resolve() / found)


def fork_schema(forks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The payload schema of the built-in flow: ``fork`` or ``repo`` names one of ``forks``."""
    names = sorted(f["name"] for f in forks)
    repos = sorted({f["repo"] for f in forks if f.get("repo")})
    choices: list[dict[str, Any]] = []
    if names:
        choices.append({"required": ["fork"], "properties": {"fork": {"enum": names}}})
    if repos:
        # An event that names a fork is matched by the name alone, never by its repo.
        choices.append(
            {
                "required": ["repo"],
                "not": {"required": ["fork"]},
                "properties": {"repo": {"enum": repos}},
            }
        )
    return {"type": "object", "anyOf": choices or [{"not": {}}]}
