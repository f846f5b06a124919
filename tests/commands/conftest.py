"""Helpers for the command tests: a workspace folder with a given workspace.toml."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from support.backend import dead_url

from workspace_adapter.base.globals import Globals


@pytest.fixture
def dead_backend_url() -> str:
    return dead_url()


MakeWorkspace = Callable[[str], Globals]


@pytest.fixture
def make_workspace(tmp_path: Path, dead_backend_url: str) -> MakeWorkspace:
    """Write ``workspace.toml`` (dedented) into a fresh root; returns the command globals."""

    def make(toml: str) -> Globals:
        root = tmp_path / "ws"
        root.mkdir(exist_ok=True)
        (root / "workspace.toml").write_text(textwrap.dedent(toml), encoding="utf-8")
        return Globals(
            workspace_root=root.resolve(),
            backend_url=dead_backend_url,
            mode="local",
            log_level="warning",
        )

    return make
