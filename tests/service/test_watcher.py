"""The watcher's manners: it never stalls its event loop, and says each problem once."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from service_helpers import GIT_SOURCE, records, write_workspace
from support.backend import WORKSPACE, dead_url

from workspace_adapter.harness import cut_release
from workspace_adapter.local import configfile
from workspace_adapter.service.records import Records
from workspace_adapter.service.schema import PollOutcome, data_dir
from workspace_adapter.service.watcher import Watcher


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)


HOLD_THE_WRITE_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")  # what another watcher's poll holds while it records
print("held", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
"""


class AnnouncingRecords(Records):
    """Records whose ``record_poll`` says, from the thread that runs it, that it is starting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writing = threading.Event()

    def record_poll(self, *args: Any, **kwargs: Any) -> PollOutcome:
        self.writing.set()
        return super().record_poll(*args, **kwargs)


async def test_a_pass_waiting_for_the_records_lock_does_not_stall_the_event_loop(
    workspace_root: Path,
) -> None:
    """In ``serve`` the backend shares the watcher's loop: a busy store must not freeze it.

    Another process holds the write lock until a task on the loop lets it go, and that task
    only does so once the pass has begun its write. Were the write run on the loop, the loop
    could not let the lock go and the write would fail at the store's busy timeout.
    """
    root = workspace_root
    write_workspace(root, GIT_SOURCE)
    store = AnnouncingRecords(data_dir(root))
    store.open()
    holder = await anyio.open_process([sys.executable, "-c", HOLD_THE_WRITE_LOCK, str(store.path)])
    async with holder:
        assert holder.stdin is not None and holder.stdout is not None
        said = BufferedByteReceiveStream(holder.stdout)
        assert await said.receive_until(b"\n", 100) == b"held"
        watcher = Watcher(configfile.load(root), store, dead_url())
        codes: list[int] = []
        async with anyio.create_task_group() as group:

            async def one_pass() -> None:
                codes.append(await watcher.run_once())

            group.start_soon(one_pass)
            await anyio.to_thread.run_sync(store.writing.wait)
            assert codes == [], "the pass finished while another process held the write lock"
            await holder.stdin.send(b"release\n")
        assert await holder.wait() == 0
    assert codes == [0]
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
