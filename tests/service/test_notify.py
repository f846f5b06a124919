"""The notify command: best effort, whatever the command does with its stdin or its time."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from support.processes import gone

from workspace_adapter.service import notify
from workspace_adapter.service.schema import Attempt


def attempt(message: str = "conflicts in index.js") -> Attempt:
    return Attempt(
        id="att_20260101T000000_00000000",
        event_id="patch:upstream:v0.1.4:upstream.release",
        operation="dispatch",
        status="needs_intervention",
        upstream_repo="peezy-tech/patch-moi-harness",
        upstream_tag="v0.1.4",
        message=message,
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
    )


async def run(command: list[str], root: Path, which: Attempt, timeout: float = 10.0) -> bool:
    return await notify.notify(command, which, root, timeout)


async def test_the_attempt_arrives_on_stdin(tmp_path: Path) -> None:
    assert await run(["sh", "-c", "cat > got.json"], tmp_path, attempt()) is True
    got = json.loads((tmp_path / "got.json").read_text())
    assert (got["id"], got["status"], got["upstreamTag"]) == (
        "att_20260101T000000_00000000",
        "needs_intervention",
        "v0.1.4",
    )


async def test_a_command_that_does_not_read_its_stdin_is_no_error(tmp_path: Path) -> None:
    # More than a pipe holds, so the write meets a closed pipe rather than a buffer.
    big = attempt("x" * 300_000)
    assert await run(["sh", "-c", "exec 0<&-; exit 0"], tmp_path, big) is True
    assert await run(["true"], tmp_path, big) is True
    assert await run(["sh", "-c", "exec 0<&-; echo boom >&2; exit 3"], tmp_path, big) is False


async def test_a_failing_or_missing_command_is_logged_not_raised(tmp_path: Path) -> None:
    assert await run(["sh", "-c", "echo nope >&2; exit 2"], tmp_path, attempt()) is False
    assert await run([str(tmp_path / "no-such-notifier")], tmp_path, attempt()) is False


async def test_a_hanging_command_is_stopped_with_what_it_started(tmp_path: Path) -> None:
    started = time.monotonic()
    hang = ["sh", "-c", "sleep 60 & echo $! > child.pid; wait"]
    assert await run(hang, tmp_path, attempt(), timeout=0.5) is False
    assert time.monotonic() - started < 5
    # notify returns once the whole group is gone.
    assert gone(int((tmp_path / "child.pid").read_text()))


async def test_a_command_ignoring_sigterm_is_killed_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "NOTIFY_KILL_GRACE", 1.0)
    # SIGTERM is ignored by the shell and, inherited, by its child; "ready" is written after.
    stubborn = ["sh", "-c", "trap '' TERM; sleep 60 & echo $! > child.pid; echo > ready; wait"]
    started = time.monotonic()
    assert await run(stubborn, tmp_path, attempt(), timeout=2.0) is False
    assert time.monotonic() - started >= 2.0 + 1.0
    # Ready before the timeout, so SIGTERM met the trap: only SIGKILL ended them.
    assert (tmp_path / "ready").exists()
    assert gone(int((tmp_path / "child.pid").read_text()))


async def test_a_background_job_of_a_command_that_exited_does_not_hold_the_watcher(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    detached = ["sh", "-c", "cat > got.json; sleep 30 & echo $! > child.pid; exit 0"]
    assert await run(detached, tmp_path, attempt(), timeout=20) is True
    assert time.monotonic() - started < 5
    os.kill(int((tmp_path / "child.pid").read_text()), 9)
