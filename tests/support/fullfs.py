"""A full disk for tests: a real small tmpfs filled until ENOSPC, or SQLite's simulated one.

The real kind mounts a 256 KiB tmpfs (root can; an unprivileged container usually cannot), the
test puts its workspace there, and :meth:`FullDisk.fill` writes a file until the file system
says ENOSPC. Where mounting is not permitted, that kind is skipped with the reason. The
simulated kind always runs: the real CLI in a subprocess whose every SQLite connection is capped
at the pages its file already has (``PRAGMA max_page_count``, as
tests/faults/test_fault_sqlite.py does in-process), so the first write that needs a new page
fails with SQLITE_FULL. The test id says which kind ran (``[tmpfs]``, ``[simulated]``), and so
does the captured output (``full disk: ...``, shown by ``pytest -rA``).

Use it by naming the fixture in the test module: ``full_disk = fullfs.full_disk``.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.backend import WORKSPACE

MOUNT_SIZE = "256k"

# The real CLI, every SQLite connection capped at the size its file has when opened.
_SIMULATED = """
import sqlite3, sys
_connect = sqlite3.connect
def connect(*args, **kwargs):
    db = _connect(*args, **kwargs)
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {max(pages, 1)}")
    return db
sqlite3.connect = connect
from workspace_adapter.cli import main
sys.exit(main())
"""


class FullDisk:
    """A folder on a file system the test can fill (``kind`` ``tmpfs``) or pretend to fill
    (``simulated``); :meth:`workspace` runs the real CLI against it."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.filled = False
        self._filler = root / "filler"

    def fill(self) -> None:
        """Take every free byte (tmpfs), or cap the CLI's SQLite files at their size."""
        if self.kind == "tmpfs":
            fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            chunk = b"\0" * 65536
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
            finally:
                os.close(fd)
        self.filled = True

    def free(self) -> None:
        """Give the space back."""
        self._filler.unlink(missing_ok=True)
        self.filled = False

    def workspace(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``workspace ARGS`` as a subprocess; simulated and filled: with capped connections."""
        if self.kind == "simulated" and self.filled:
            argv = [sys.executable, "-c", _SIMULATED, *args]
        else:
            argv = [str(WORKSPACE), *args]
        env = {k: v for k, v in os.environ.items() if k != "DATA_DIR"}  # the records go in ws/
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


def _mount(where: Path) -> str | None:
    """Mount a tmpfs at ``where``; None when it is mounted, else why not."""
    if os.geteuid() != 0:
        return "not root"
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={MOUNT_SIZE}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError as exc:
        return f"mount: {exc}"
    return None if done.returncode == 0 else f"mount: {done.stderr.strip() or done.returncode}"


@pytest.fixture(params=["tmpfs", "simulated"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FullDisk]:
    """A :class:`FullDisk` of each kind; the tmpfs kind is skipped where mounting is not allowed."""
    if request.param == "simulated":
        print("full disk: simulated (SQLite max_page_count on every connection)")
        root = tmp_path / "disk"
        root.mkdir()
        yield FullDisk("simulated", root)
        return
    root = tmp_path / "tmpfs"
    root.mkdir()
    problem = _mount(root)
    if problem is not None:
        pytest.skip(f"no real full disk here (cannot mount a tmpfs: {problem}); simulated ran")
    print(f"full disk: tmpfs {MOUNT_SIZE}")
    try:
        yield FullDisk("tmpfs", root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False, timeout=30)
