"""Small flow packages written into temp folders, for the flow tests."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MakeFlow = Callable[..., Path]


@pytest.fixture
def make_flow(tmp_path: Path) -> MakeFlow:
    """``make_flow(name, toml, files={...}, under="flows")`` → the package folder.

    ``toml`` is the body of flow.toml after ``name``/``version``; ``files`` maps relative
    paths to text (or to a dict, written as JSON).
    """

    def make(
        name: str,
        toml: str,
        *,
        files: dict[str, str | dict[str, Any]] | None = None,
        under: str = "flows",
        root: Path | None = None,
        header: bool = True,
    ) -> Path:
        folder = (root or tmp_path) / under / name
        folder.mkdir(parents=True, exist_ok=True)
        head = f'name = "{name}"\nversion = "1.2.3"\n' if header else ""
        (folder / "flow.toml").write_text(head + textwrap.dedent(toml), encoding="utf-8")
        for rel, content in (files or {}).items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(content) if isinstance(content, dict) else textwrap.dedent(content)
            path.write_text(text, encoding="utf-8")
        return folder

    return make
