"""The watcher's manners: it never stalls its event loop, and says each problem once."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import anyio
import pytest
from service_helpers import GIT_SOURCE, records, write_workspace
from support.backend import WORKSPACE, dead_url

from workspace_adapter.harness import cut_release
from workspace_adapter.local import configfile
from workspace_adapter.service.watcher import Watcher


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)


def test_a_pass_waiting_for_the_records_lock_does_not_stall_the_event_loop(
    workspace_root: Path,
) -> None:
    """In ``serve`` the backend shares the watcher's loop: a busy store must not freeze it."""
    root = workspace_root
    write_workspace(root, GIT_SOURCE)
    store = records(root)
    held = threading.Event()

    def hold_the_write_lock() -> None:
        db = sqlite3.connect(store.path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")  # what another watcher's poll holds while it records
        held.set()
        time.sleep(1.5)
        db.execute("COMMIT")
        db.close()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    held.wait(5)
    gaps: list[float] = []

    async def main() -> None:
        watcher = Watcher(configfile.load(root), store, dead_url())
        async with anyio.create_task_group() as group:

            async def heartbeat() -> None:
                last = time.monotonic()
                while True:
                    await anyio.sleep(0.05)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            group.start_soon(heartbeat)
            assert await watcher.run_once() == 0
            await anyio.sleep(0.2)  # the heartbeat notes the gap the pass left, if any
            group.cancel_scope.cancel()

    started = time.monotonic()
    anyio.run(main)
    holder.join()
    assert time.monotonic() - started >= 1.0, "the pass did not wait for the lock"
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f}s"
    cursor = store.cursor("upstream")
    assert cursor is not None and cursor.primed_at is not None


BROKEN_SOURCE = """
[[workspace.sources]]
id = "gone"
kind = "git-tags"
url = "harness/remotes/no-such-remote.git"
repo = "o/gone"
"""


def test_watch_once_says_each_problem_in_one_line_without_a_traceback(
    workspace_root: Path,
) -> None:
    root = workspace_root
    write_workspace(root, GIT_SOURCE + BROKEN_SOURCE)
    down = dead_url()

    def watch_once() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(WORKSPACE),
                "--workspace-root",
                str(root),
                "--backend-url",
                down,
                "watch",
                "--once",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = watch_once()
    assert first.returncode == 1, first  # the broken source failed; nothing to deliver
    [problem] = first.stderr.splitlines()
    assert problem.startswith("gone: poll failed: git ls-remote --tags ")
    assert "check the source's url" in problem

    cut_release(root)
    second = watch_once()
    assert second.returncode == 4, second
    assert "Traceback" not in second.stderr and "{" not in second.stderr
    source_line, backend_line = second.stderr.splitlines()
    assert source_line.startswith("gone: poll failed: ")
    assert backend_line == (
        f"error: backend not reachable at {down}; start it with `workspace backend` "
        "(`workspace watch` delivers what is waiting)"
    )
    out = second.stdout.splitlines()
    assert out[0].startswith("upstream: new release v0.1.4 → attempt att_")
    assert ": undelivered (backend not reachable); next try at " in out[1]
    [attempt] = records(root).attempts()
    assert (attempt.status, attempt.message) == ("undelivered", "backend not reachable")
