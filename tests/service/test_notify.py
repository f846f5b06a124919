"""The notify command: best effort, whatever the command does with its stdin or its time."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import anyio

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


def run(command: list[str], root: Path, which: Attempt, timeout: float = 10.0) -> bool:
    return anyio.run(lambda: notify.notify(command, which, root, timeout))


def test_the_attempt_arrives_on_stdin(tmp_path: Path) -> None:
    assert run(["sh", "-c", "cat > got.json"], tmp_path, attempt()) is True
    got = json.loads((tmp_path / "got.json").read_text())
    assert (got["id"], got["status"], got["upstreamTag"]) == (
        "att_20260101T000000_00000000",
        "needs_intervention",
        "v0.1.4",
    )


def test_a_command_that_does_not_read_its_stdin_is_no_error(tmp_path: Path) -> None:
    # More than a pipe holds, so the write meets a closed pipe rather than a buffer.
    big = attempt("x" * 300_000)
    assert run(["sh", "-c", "exec 0<&-; exit 0"], tmp_path, big) is True
    assert run(["true"], tmp_path, big) is True
    assert run(["sh", "-c", "exec 0<&-; echo boom >&2; exit 3"], tmp_path, big) is False


def test_a_failing_or_missing_command_is_logged_not_raised(tmp_path: Path) -> None:
    assert run(["sh", "-c", "echo nope >&2; exit 2"], tmp_path, attempt()) is False
    assert run([str(tmp_path / "no-such-notifier")], tmp_path, attempt()) is False


def test_a_hanging_command_is_killed_with_what_it_started(tmp_path: Path) -> None:
    started = time.monotonic()
    hang = ["sh", "-c", "sleep 60 & echo $! > child.pid; wait"]
    assert run(hang, tmp_path, attempt(), timeout=0.5) is False
    assert time.monotonic() - started < 5
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(child):
        assert time.monotonic() < deadline, "the notify command's child outlived it"
        time.sleep(0.05)


def test_a_background_job_of_a_command_that_exited_does_not_hold_the_watcher(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    detached = ["sh", "-c", "cat > got.json; sleep 30 & echo $! > child.pid; exit 0"]
    assert run(detached, tmp_path, attempt(), timeout=20) is True
    assert time.monotonic() - started < 5
    os.kill(int((tmp_path / "child.pid").read_text()), 9)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by init) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
