"""The options every command receives (the CLI's common flags, resolved)."""

from __future__ import annotations

from pathlib import Path

from workspace_adapter.base.values import Value


class Globals(Value):
    """The flags every command accepts, with their defaults applied."""

    __slots__ = ("backend_url", "log_level", "mode", "workspace_root")

    def __init__(self, workspace_root: Path, backend_url: str, mode: str, log_level: str) -> None:
        self.workspace_root = workspace_root
        self.backend_url = backend_url
        self.mode = mode
        self.log_level = log_level

    def replace(self, *, backend_url: str) -> Globals:
        """A copy talking to another backend (``serve``: its own, once it is bound)."""
        return Globals(self.workspace_root, backend_url, self.mode, self.log_level)
