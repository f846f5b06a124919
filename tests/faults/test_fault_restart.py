"""No outcome is lost when the backend dies mid-run or cannot write a run's end.

Steps write their output and exit status to their run's folder, so a restarted backend takes up
what the last one left: a step still running is followed and awaited, a step that ended is
recorded from its files, and only a run with neither is ``failed, backend restarted`` (that case
is ``tests/backend/test_backend_lifecycle.py``). A run end the store cannot take (a full disk) is
kept, shown to ``getRun`` and ``wait``, and written once space returns.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.backend import Backend
from support.git import git
from support.processes import pid_alive
from support.waiting import until
from support.wire import Rpc, open_rpc

from workspace_adapter.harness import cut_release

# A step that prints a line, waits for a file named ``go`` in its folder, then prints another
# line and its result: the test decides when it ends.
GATED = """
name = "gated"
[[steps]]
name = "wait"
runner = "command"
command = ["sh", "-c", '''
echo "before $$"
while [ ! -e go ]; do sleep 0.02; done
echo after
echo 'FLOW_RESULT {"status":"changed","message":"gate opened"}'
''']
timeout_ms = 60000
[steps.trigger]
type = "gate.event"
"""


@pytest.fixture
def gated(tmp_path: Path) -> Path:
    """A workspace with the gated flow; its ``go`` file opens the gate."""
    root = tmp_path / "ws"
    folder = root / "flows" / "gated"
    folder.mkdir(parents=True)
    (folder / "flow.toml").write_text(textwrap.dedent(GATED))
    return root


def gate(root: Path) -> Path:
    return root / "flows" / "gated" / "go"


async def started(backend: Backend, event_id: str) -> tuple[Rpc, str, int]:
    """A subscribed session and a gated run under way: (rpc, run id, the step's shell pid)."""
    rpc = await open_rpc(backend.url)
    await rpc.call("flow.subscribe", {})
    reply = await rpc.call("flow.dispatch", {"id": event_id, "type": "gate.event"})
    run_id: str = reply["runIds"][0]
    line = await rpc.note("flow.run.output", lambda p: p["runId"] == run_id)
    assert line["params"]["line"].startswith("before ")
    return rpc, run_id, int(line["params"]["line"].split()[1])


async def ended(rpc: Rpc, run_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        run: dict[str, Any] = (await rpc.call("flow.getRun", {"runId": run_id}))["run"]
        return run if run["status"] not in ("queued", "running") else None

    return await until(check, f"run {run_id} to end")


async def test_a_step_still_running_after_a_backend_sigkill_is_taken_up(
    gated: Path, tmp_path: Path
) -> None:
    first = Backend(gated, tmp_path / "data").start()
    _rpc, run_id, shell = await started(first, "still-running")
    first.stop(signal.SIGKILL)
    assert pid_alive(shell), "the step must not depend on the backend staying alive"
    second = Backend(gated, tmp_path / "data").start()
    try:
        rpc = await open_rpc(second.url)
        assert (await rpc.call("flow.getRun", {"runId": run_id}))["run"]["status"] == "running"
        gate(gated).touch()
        run = await ended(rpc, run_id)
        assert (run["status"], run["resultStatus"], run["error"]) == ("completed", "changed", None)
        assert run["result"]["message"] == "gate opened"
        # Its output from before and after the restart is in the record.
        assert "before " in run["stdoutTail"] and "after" in run["stdoutTail"]
        assert not (tmp_path / "data" / "runs" / run_id).exists(), "its folder goes once stored"
        await rpc.ws.close()
    finally:
        assert second.stop() == 0


async def test_a_step_that_ended_while_no_backend_ran_is_recorded_from_its_files(
    gated: Path, tmp_path: Path
) -> None:
    first = Backend(gated, tmp_path / "data").start()
    _rpc, run_id, shell = await started(first, "ended-meanwhile")
    first.stop(signal.SIGKILL)
    gate(gated).touch()
    exit_file = tmp_path / "data" / "runs" / run_id / "exit"
    await until(lambda: not pid_alive(shell) and exit_file.exists(), "the step to end")
    second = Backend(gated, tmp_path / "data").start()
    try:
        rpc = await open_rpc(second.url)
        run = await ended(rpc, run_id)
        assert (run["status"], run["resultStatus"], run["exitCode"]) == ("completed", "changed", 0)
        assert "after" in run["stdoutTail"]
        await rpc.ws.close()
    finally:
        assert second.stop() == 0


async def test_a_taken_up_run_can_be_canceled(gated: Path, tmp_path: Path) -> None:
    first = Backend(gated, tmp_path / "data").start()
    _rpc, run_id, shell = await started(first, "cancel-after-restart")
    first.stop(signal.SIGKILL)
    second = Backend(gated, tmp_path / "data").start()
    try:
        rpc = await open_rpc(second.url)
        await until(lambda: (tmp_path / "data" / "runs" / run_id).exists(), "the run's folder")
        canceled = await rpc.call("flow.cancelRun", {"runId": run_id})
        assert canceled["run"]["status"] == "canceled"
        await until(lambda: not pid_alive(shell), "the taken-up step's processes to go")
        await rpc.ws.close()
    finally:
        assert second.stop() == 0


# --- a full disk when a run ends ------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs for the backend's data directory (skipped where mounting is refused)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"full disk: cannot mount a tmpfs here ({done.stderr.strip()})")
    print("full disk: tmpfs 8m")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def stored_status(data: Path, run_id: str) -> str:
    import sqlite3

    with sqlite3.connect(f"file:{data / 'backend.sqlite'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    return str(row[0])


async def test_a_run_end_on_a_full_disk_is_kept_shown_and_written_when_space_returns(
    gated: Path, small_disk: Path
) -> None:
    data = small_disk / "data"
    daemon = Backend(gated, data).start()
    try:
        rpc = await open_rpc(daemon.url)
        await rpc.call("flow.subscribe", {})
        waiting = await open_rpc(daemon.url)
        event = {"id": "full-at-end", "type": "gate.event"}
        asked = await waiting.send("flow.dispatch", {"event": event, "wait": True})
        line = await rpc.note("flow.run.output", lambda p: p["line"].startswith("before "))
        run_id = line["params"]["runId"]
        filler = fill(small_disk)
        gate(gated).touch()
        # The store cannot take the end, but wait and getRun see it.
        reply = (await waiting.reply(asked))["result"]
        assert [(r["id"], r["status"]) for r in reply["runs"]] == [(run_id, "completed")]
        run = await ended(rpc, run_id)
        assert (run["status"], run["resultStatus"]) == ("completed", "changed")
        assert stored_status(data, run_id) == "running"
        again = await rpc.call("flow.cancelRun", {"runId": run_id})
        assert again["run"]["status"] == "completed", "an ended run is not canceled"
        filler.unlink()
        await until(lambda: stored_status(data, run_id) == "completed", "the end to be stored")
        await until(lambda: not (data / "runs" / run_id).exists(), "the run's folder to go")
        await rpc.ws.close()
        await waiting.ws.close()
    finally:
        assert daemon.stop() == 0
    assert "run.end_not_recorded" in daemon.stderr() and "run.end_recorded" in daemon.stderr()


async def test_a_run_end_lost_with_the_backend_on_a_full_disk_is_recovered_on_restart(
    gated: Path, small_disk: Path
) -> None:
    data = small_disk / "data"
    first = Backend(gated, data).start()
    rpc, run_id, _shell = await started(first, "full-then-kill")
    filler = fill(small_disk)
    gate(gated).touch()
    assert (await ended(rpc, run_id))["status"] == "completed"
    first.stop(signal.SIGKILL)
    filler.unlink()
    second = Backend(gated, data).start()
    try:
        rpc = await open_rpc(second.url)
        run = await ended(rpc, run_id)
        # Recorded from its FLOW_RESULT line (the full disk kept even its exit file out).
        assert (run["status"], run["resultStatus"]) == ("completed", "changed")
        assert stored_status(data, run_id) == "completed"
        await rpc.ws.close()
    finally:
        assert second.stop() == 0


# --- the harness flow: the record matches what happened to the fork -------------------------

FIXTURE = Path(__file__).resolve().parents[2] / "flows/patch-moi-harness/fixtures"


async def test_a_backend_sigkilled_mid_harness_step_records_what_the_step_did(
    workspace_root: Path, tmp_path: Path
) -> None:
    tag = cut_release(workspace_root)
    event = json.loads((FIXTURE / "upstream-release-v0.1.3.json").read_text())
    event["id"] = f"release-{tag}"
    event["payload"]["tag"] = tag
    # Fetching reads the harness's local upstream remote; pushing stays off.
    env = {"CODEX_FLOW_FETCH": "1", "CODEX_FLOW_PUSH": "0"}
    first = Backend(workspace_root, tmp_path / "data", env=env).start()
    rpc = await open_rpc(first.url)
    await rpc.call("flow.subscribe", {})
    run_id = (await rpc.call("flow.dispatch", {"event": event}))["runIds"][0]
    await rpc.note("flow.run.output", lambda p: p["runId"] == run_id)
    first.stop(signal.SIGKILL)
    second = Backend(workspace_root, tmp_path / "data", env=env).start()
    try:
        rpc = await open_rpc(second.url)
        run = await ended(rpc, run_id)
        assert run["status"] == "completed", (run["error"], run["stderrTail"][-2000:])
        assert run["resultStatus"] == "changed", run["result"]
        fork = workspace_root / "harness" / "fork"
        git(fork, "merge-base", "--is-ancestor", tag, "main")  # raises if it is not
        assert run["result"]["artifacts"]["candidateRefs"]
        # The fork is free again: a retry finds the release applied, not "fork busy".
        replay = await rpc.call("flow.replay", {"eventId": event["id"], "wait": True})
        again = replay["runs"][0]
        assert (again["status"], again["resultStatus"]) == ("completed", "completed"), again
        await rpc.ws.close()
    finally:
        assert second.stop() == 0
