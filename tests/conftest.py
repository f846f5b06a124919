"""Shared fixtures: the harness repos are built once per session and copied per test.

Also puts ``tests/`` on ``sys.path`` so every test folder imports ``support.*``.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO_ROOT = TESTS.parent

# Test folders are not packages; the helpers they share live in ``tests/support/``.
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session")
def harness_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace root holding a freshly built ``harness/`` (built once per session)."""
    from workspace_adapter.harness import init_harness

    root = tmp_path_factory.mktemp("harness-template")
    init_harness(root)
    return root


@pytest.fixture
def workspace_root(tmp_path: Path, harness_template: Path) -> Iterator[Path]:
    """A private workspace root: a copy of the harness plus this project's ``flows/``."""
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copytree(harness_template / "harness", root / "harness", symlinks=True)
    shutil.copytree(REPO_ROOT / "flows", root / "flows", symlinks=True)
    yield root
