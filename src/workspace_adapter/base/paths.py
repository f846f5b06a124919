"""Where things live: the workspace root and the folders under ``.workspace/``."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_CANDIDATES = ("workspace.toml", ".codex/workspace.toml")


def find_config(start: Path) -> Path | None:
    """The first ``workspace.toml`` (then ``.codex/workspace.toml``) walking up from ``start``."""
    start = start.resolve()
    for folder in (start, *start.parents):
        for name in CONFIG_CANDIDATES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def root_of_config(config: Path) -> Path:
    """The workspace root that holds ``config`` (the parent of ``.codex/`` for the fallback)."""
    parent = config.parent
    return parent.parent if parent.name == ".codex" else parent


def resolve_root(explicit: str | None, cwd: Path | None = None) -> Path:
    """``--workspace-root`` when given, else the folder of the nearest config, else the cwd."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    here = cwd or Path.cwd()
    config = find_config(here)
    return root_of_config(config) if config is not None else here.resolve()


def default_mode() -> str:
    """``actions`` under GitHub Actions, else ``local``."""
    return "actions" if os.environ.get("GITHUB_ACTIONS") == "true" else "local"


def state_dir(root: Path, mode: str) -> Path:
    """Local run state of one mode: ``.workspace/<mode>/``."""
    return root / ".workspace" / mode


# Where ``workspace backend`` listens unless told otherwise, and so where clients look for it.
DEFAULT_BACKEND_HOST = "127.0.0.1"
DEFAULT_BACKEND_PORT = 3586


def default_backend_url() -> str:
    """The backend's WebSocket URL: ``$CODEX_WORKSPACE_BACKEND_WS_URL``, else the default
    address (:data:`DEFAULT_BACKEND_HOST`, :data:`DEFAULT_BACKEND_PORT`)."""
    return (
        os.environ.get("CODEX_WORKSPACE_BACKEND_WS_URL")
        or f"ws://{DEFAULT_BACKEND_HOST}:{DEFAULT_BACKEND_PORT}"
    )
