"""Reading workspace.toml: find the file, parse the TOML, check it against the schema."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from workspace_adapter.base import paths
from workspace_adapter.local.config import ConfigError, WorkspaceConfig, display_path
from workspace_adapter.local.configcheck import Checker


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
        text = path.read_text(encoding="utf-8-sig")  # an editor's byte-order mark is harmless
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
    checker = Checker(shown, text)
    config = checker.workspace(data, path, root)
    if checker.problems:
        raise ConfigError(checker.problems)
    return config
