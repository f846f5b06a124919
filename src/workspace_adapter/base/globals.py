"""The options every command receives (the CLI's common flags, resolved)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class Globals(NamedTuple):
    """The flags every command accepts, with their defaults applied."""

    workspace_root: Path
    backend_url: str
    mode: str
    log_level: str
