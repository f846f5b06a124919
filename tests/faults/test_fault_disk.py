"""A full disk when a local store is created or opened, through the real CLI.

Each test runs on a real 256 KiB tmpfs filled until ENOSPC where the machine lets us mount one,
and on SQLite's simulated full disk everywhere; the test id (``[tmpfs]`` / ``[simulated]``) and
the captured ``full disk: ...`` line say which ran (tests/support/fullfs.py).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from support import fullfs
from support.fullfs import FullDisk

full_disk = fullfs.full_disk

WORKSPACE_TOML = """
[workspace]
name = "disk"

[[workspace.tasks]]
id = "hello"
kind = "command"
command = ["true"]
schedule = "0 0 1 1 *"
"""


def make_workspace(disk: FullDisk) -> Path:
    root = disk.root / "ws"
    root.mkdir()
    (root / "workspace.toml").write_text(textwrap.dedent(WORKSPACE_TOML), encoding="utf-8")
    return root


def leftovers(root: Path) -> list[str]:
    """Temp files and crash logs a failed command left under ``.workspace``."""
    found = [p for p in (root / ".workspace").rglob("*") if p.is_file()]
    return sorted(
        str(p.relative_to(root)) for p in found if p.name.endswith(".tmp") or "logs" in p.parts
    )


def assert_one_line_full(stderr: str, store: str, path: Path) -> None:
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {store} {path}: the disk is full ("), stderr
    assert lines[0].endswith("); free disk space and retry"), stderr


@pytest.mark.parametrize("command", [["run", "hello"], ["tick"]], ids=["run", "tick"])
def test_creating_the_local_state_on_a_full_disk_is_one_line(
    full_disk: FullDisk, command: list[str]
) -> None:
    """`workspace run` / `tick` with no state yet and no room: one line naming the state file,
    exit 1, no temp file or crash log left; once space returns the same command works."""
    root = make_workspace(full_disk)
    full_disk.fill()
    done = full_disk.workspace("--workspace-root", str(root), *command)
    assert done.returncode == 1, (done.stdout, done.stderr)
    state = root / ".workspace" / "local" / "state.sqlite3"
    assert_one_line_full(done.stderr, "state store", state)
    assert not state.exists()
    assert leftovers(root) == []
    full_disk.free()
    again = full_disk.workspace("--workspace-root", str(root), *command)
    assert again.returncode == 0, again.stderr
    assert state.is_file() and leftovers(root) == []


def test_opening_the_local_state_on_a_full_disk_is_one_line(full_disk: FullDisk) -> None:
    """An existing state on a disk that filled up since: `workspace run` says so in one line
    (SQLite reports it as an I/O error growing the -shm file), keeps the history, and runs
    again once space returns."""
    if full_disk.kind == "simulated":
        pytest.skip("opening grows no database page, so max_page_count cannot make it fail")
    root = make_workspace(full_disk)
    args = ("--workspace-root", str(root))
    first = full_disk.workspace(*args, "run", "hello")
    assert first.returncode == 0, first.stderr
    full_disk.fill()
    done = full_disk.workspace(*args, "run", "hello")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert_one_line_full(done.stderr, "state store", root / ".workspace/local/state.sqlite3")
    assert leftovers(root) == []
    full_disk.free()
    assert full_disk.workspace(*args, "run", "hello").returncode == 0
    runs = json.loads(full_disk.workspace(*args, "runs", "--json").stdout)["runs"]
    assert [r["status"] for r in runs] == ["completed", "completed"]


def test_creating_the_records_store_on_a_full_disk_is_one_line(full_disk: FullDisk) -> None:
    """The service path's DATA_DIR store (`workspace attempts`) on a full disk: one line naming
    the records file, exit 1, no temp file left."""
    root = make_workspace(full_disk)
    full_disk.fill()
    done = full_disk.workspace("--workspace-root", str(root), "attempts")
    assert done.returncode == 1, (done.stdout, done.stderr)
    records = root / ".workspace" / "data" / "records.sqlite3"
    assert_one_line_full(done.stderr, "records store", records)
    assert leftovers(root) == []
    full_disk.free()
    assert full_disk.workspace("--workspace-root", str(root), "attempts").returncode == 0
