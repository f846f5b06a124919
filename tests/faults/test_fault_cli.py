"""`workspace run` treated badly: a slow reader of its output, SIGKILL mid-task, a blank token.

Each test runs the real CLI in a subprocess against a real backend daemon (or none) and a real
state database, and reads what the CLI left behind: its exit code, its task record, the
processes it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from support.backend import Backend, dead_url
from support.processes import gone, pid_alive
from support.waiting import wait_until

from workspace_adapter import client, following
from workspace_adapter import protocol as rpc
from workspace_adapter.client import TOKEN_ENV
from workspace_adapter.local.state import StateStore

WORKSPACE = Path(sys.executable).with_name("workspace")
WORKSPACE_NAME = "faults"


def write_tasks(root: Path, tasks: str) -> Path:
    (root / "workspace.toml").write_text(
        f'[workspace]\nname = "{WORKSPACE_NAME}"\n' + textwrap.dedent(tasks), encoding="utf-8"
    )
    return root


def start_run(
    root: Path, url: str, task_id: str, stderr: IO[Any], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``workspace run TASK`` with its stdout a pipe this test reads (or leaves full)."""
    return subprocess.Popen(
        [str(WORKSPACE), "--workspace-root", str(root), "--backend-url", url, "run", task_id],
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def only_record(root: Path, task_id: str) -> Any:
    [record] = StateStore.for_workspace(root, "local", readonly=True).runs(task_id)
    return record


def read_line_with(pipe: IO[bytes], text: bytes) -> bytes:
    """Read lines from ``pipe`` until one holds ``text`` (the read is the wait)."""
    while line := pipe.readline():
        if text in line:
            return line
    raise AssertionError(f"the pipe closed before a line with {text!r}")


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids a test started indirectly; whatever still runs at the end is killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_cli_whose_stdout_is_not_read_follows_its_run_to_the_real_status(
    root: Path, daemon: Backend, tmp_path: Path
) -> None:
    """A flow step prints 5 MB while nobody reads the CLI's stdout (a full pipe).

    Before: the CLI blocked on printing, stopped reading the WebSocket, was closed by the
    backend as a slow subscriber (1008), then exited 4 "backend not reachable" and recorded
    `failed` without run ids, while the run completed. Now printing never holds up reading the
    socket (a bounded local buffer drops what the reader cannot take, and says so), and a
    connection the backend drops anyway is made again; the CLI exits 0 and the record holds
    the run id.
    """
    write_tasks(
        root,
        """
        [[workspace.tasks]]
        id = "flood"
        kind = "flow"
        flow = "flood.event"
        [workspace.tasks.event.payload]
        lines = 12500
        """,
    )
    with open(tmp_path / "cli-stderr", "wb+") as err:
        cli = start_run(root, daemon.url, "flood", err)
        assert cli.stdout is not None

        def ended_run() -> Any:
            found = daemon.call("flow.listRuns", {"limit": 5})
            runs = found["runs"] if isinstance(found, dict) else []
            return next((r for r in runs if r["status"] == "completed"), None)

        # Not one byte of stdout is read until the backend's run is over.
        run = wait_until(ended_run, "the flood run to complete in the backend")
        out = cli.stdout.read()
        code = cli.wait(timeout=30)
        err.seek(0)
        stderr = err.read().decode()
    assert code == 0, stderr
    record = only_record(root, "flood")
    assert (record.status, record.run_ids) == ("completed", [run["id"]]), stderr
    assert record.event_id == run["eventId"]
    assert b"flood/spew: completed" in out
    assert "backend not reachable" not in stderr


BURST_FLOW = """
name = "burst"
[[steps]]
name = "after-go"
runner = "python"
script = "burst.py"
[steps.trigger]
type = "burst.event"
"""

BURST_SCRIPT = """
import sys
sys.stdin.readline()
print("begin", flush=True)
with open(sys.argv[0].replace("burst.py", "go")) as go:  # a FIFO: blocks until the test opens it
    go.read()
sys.stdout.write(("x" * 400 + "\\n") * 25000)
print('FLOW_RESULT {"status": "completed"}')
"""


def test_a_cli_dropped_as_a_slow_subscriber_reconnects_and_exits_with_the_runs_status(
    root: Path, tmp_path: Path
) -> None:
    """The CLI is stopped (SIGSTOP) while its run prints 10 MB, so the backend closes it (1008).

    Before: once resumed it saw the closed connection, printed "backend not reachable",
    exited 4 and recorded `failed` without run ids. Now it connects again, re-reads the run,
    says on stderr that output was missed, exits 0 and records `completed` with the run id.
    """
    flow = root / "flows" / "burst"
    flow.mkdir(parents=True)
    (flow / "flow.toml").write_text(BURST_FLOW)
    (flow / "burst.py").write_text(BURST_SCRIPT)
    os.mkfifo(flow / "go")
    write_tasks(root, '[[workspace.tasks]]\nid = "burst"\nkind = "flow"\nflow = "burst.event"\n')
    daemon = Backend(root, tmp_path / "data").start()
    try:
        with open(tmp_path / "cli-stderr", "wb+") as err:
            cli = start_run(root, daemon.url, "burst", err)
            assert cli.stdout is not None
            read_line_with(cli.stdout, b"begin")
            cli.send_signal(signal.SIGSTOP)
            try:
                with open(flow / "go", "w"):
                    pass  # the step floods now, and the CLI reads nothing
                wait_until(
                    lambda: "slow_subscriber" in daemon.stderr() or None,
                    "the backend to close the stopped CLI",
                )
            finally:
                cli.send_signal(signal.SIGCONT)
            out, _ = cli.communicate(timeout=60)
            err.seek(0)
            stderr = err.read().decode()
        record = only_record(root, "burst")
        assert cli.returncode == 0, stderr
        assert "dropped this follower" in stderr and "not shown" in stderr
        [run_id] = record.run_ids
        assert record.status == "completed"
        assert b"burst/after-go: completed [" + run_id.encode() + b"]" in out
    finally:
        daemon.stop()


async def test_a_follower_whose_backend_stays_away_says_which_runs_it_lost(
    root: Path, tmp_path: Path
) -> None:
    """The backend is SIGKILLed while a follower waits for a run, and does not come back.

    The follower tries to connect again for its window, then gives up with one line (exit 4)
    that names the run, so `workspace show RUN_ID --follow` can pick it up later.
    """
    daemon = Backend(root, tmp_path / "data").start()
    session = await client.open_client(daemon.url)
    step_group = 0
    try:
        await client.subscribe(session, "lost-1")
        reply = await session.request(
            "flow.dispatch", {"event": {"id": "lost-1", "type": "sleep.event"}}
        )
        [run_id] = reply["runIds"]
        line = ""
        while not line.startswith("child "):
            note = await session.next_notification()
            if note.method == rpc.RUN_OUTPUT:
                line = rpc.decode_params(note, rpc.RunOutput).line
        step_group = os.getpgid(int(line.split()[1]))
        daemon.stop(signal.SIGKILL)
        with pytest.raises(following.FollowLost) as lost:
            await following.follow_until_done(session, "lost-1", [run_id], reconnect_for=0.3)
    finally:
        if step_group:  # the step outlives a SIGKILLed backend by design; not this test's
            os.killpg(step_group, signal.SIGKILL)
    assert lost.value.exit_code == 4
    assert run_id in lost.value.message and "could not reconnect within 0.3s" in lost.value.message


def test_sigkill_of_run_kills_the_command_task_and_what_it_started(
    root: Path, tmp_path: Path, leftovers: list[int]
) -> None:
    """SIGKILL of `workspace run` while its command task runs.

    Before: the task (its own session) and its children ran on as orphans. Now every process
    still in the task's process group is killed with it: the leader and a grandchild that
    prints nothing (so a broken pipe is not what ends it).
    """
    script = "sleep 300 & echo pids $$ $!; wait"
    write_tasks(
        root,
        f"""
        [[workspace.tasks]]
        id = "stays"
        kind = "command"
        command = ["sh", "-c", "{script}"]
        """,
    )
    with open(tmp_path / "cli-stderr", "wb") as err:
        cli = start_run(root, dead_url(), "stays", err)
    assert cli.stdout is not None
    line = read_line_with(cli.stdout, b"pids ")
    shell, child = (int(x) for x in line.split()[1:])
    leftovers += [shell, child]
    assert pid_alive(shell) and pid_alive(child)
    cli.kill()
    cli.wait(timeout=10)
    wait_until(lambda: gone(shell) and gone(child), "the task and its child to die with the CLI")


def test_sigkill_of_run_leaves_the_flow_tasks_event_and_run_ids_in_its_record(
    root: Path, daemon: Backend, tmp_path: Path
) -> None:
    """SIGKILL of `workspace run` while it follows a flow task's backend run.

    Before: the record kept neither the event id nor the run ids (they were written when the
    run ended), so nothing pointed at the backend run that went on. Now both are written the
    moment the backend acknowledges the dispatch; after the kill, the next command marks the
    record `failed`, `interrupted`, and `workspace runs --json` and `tasks --json` show both.
    """
    write_tasks(
        root,
        """
        [[workspace.tasks]]
        id = "sleepy"
        kind = "flow"
        flow = "sleep.event"
        """,
    )
    with open(tmp_path / "cli-stderr", "wb") as err:
        cli = start_run(root, daemon.url, "sleepy", err)
    assert cli.stdout is not None
    read_line_with(cli.stdout, b"started")  # the step runs, and the CLI follows it
    cli.kill()
    cli.wait(timeout=10)
    shown = subprocess.run(
        [str(WORKSPACE), "--workspace-root", str(root), "runs", "sleepy", "--json"],
        capture_output=True,
        check=True,
    )
    [record] = json.loads(shown.stdout)["runs"]
    assert (record["status"], record["reason"]) == ("failed", "interrupted")
    assert record["eventId"] == f"workspace:{WORKSPACE_NAME}:sleepy:{record['id']}"
    [run_id] = record["runIds"]
    tasks = subprocess.run(
        [str(WORKSPACE), "--workspace-root", str(root), "tasks", "--json"],
        capture_output=True,
        check=True,
    )
    [row] = json.loads(tasks.stdout)["tasks"]
    assert (row["lastRun"]["eventId"], row["lastRun"]["runIds"]) == (record["eventId"], [run_id])
    run = daemon.call("flow.getRun", {"runId": run_id})
    assert isinstance(run, dict)
    assert (run["run"]["eventId"], run["run"]["status"]) == (record["eventId"], "running")
    daemon.call("flow.cancelRun", {"runId": run_id})


def test_a_blank_token_is_refused_before_anything_is_sent(root: Path, tmp_path: Path) -> None:
    """`CODEX_WORKSPACE_BACKEND_TOKEN=" "` used to be sent as is and then match nothing.

    Now the CLI refuses it up front: exit 2, one line naming the variable, and no run record.
    """
    write_tasks(root, '[[workspace.tasks]]\nid = "f"\nkind = "flow"\nflow = "demo.event"\n')
    done = subprocess.run(
        [str(WORKSPACE), "--workspace-root", str(root), "--backend-url", dead_url(), "run", "f"],
        capture_output=True,
        text=True,
        env={**os.environ, TOKEN_ENV: " "},
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert TOKEN_ENV in line and "blank" in line
    assert not StateStore.for_workspace(root, "local").exists() or not only_records(root)


def only_records(root: Path) -> list[Any]:
    return StateStore.for_workspace(root, "local", readonly=True).runs()
