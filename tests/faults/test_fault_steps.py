"""Steps that misbehave inside a real daemon: ignore SIGTERM, flood 50 MB of output."""

from __future__ import annotations

import asyncio
import errno
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from support.backend import Backend, in_process_service
from support.flows import write_flows
from support.processes import pid_alive
from support.waiting import until
from support.wire import open_rpc

from workspace_adapter.backend.store import BackendStore
from workspace_adapter.flows.executor import LocalExecutor
from workspace_adapter.flows.runner import StepInvocation, StepOutcome

STUBBORN = """
name = "stubborn"
[[steps]]
name = "ignore-term"
runner = "command"
command = ["sh", "-c", "trap '' TERM; sleep 300 & echo pids $$ $!; wait; sleep 300"]
[steps.trigger]
type = "stubborn.event"
"""


async def test_a_step_ignoring_sigterm_is_killed_after_the_grace_on_shutdown(
    root: Path, tmp_path: Path
) -> None:
    (root / "flows" / "stubborn").mkdir()
    (root / "flows" / "stubborn" / "flow.toml").write_text(STUBBORN)
    daemon = Backend(root, tmp_path / "data").start()
    rpc = await open_rpc(daemon.url)
    await rpc.call("flow.subscribe", {})
    run_id = (await rpc.call("flow.dispatch", {"id": "stubborn-1", "type": "stubborn.event"}))[
        "runIds"
    ][0]
    line = await rpc.note("flow.run.output", lambda p: p["runId"] == run_id)
    shell, child = (int(x) for x in line["params"]["line"].split()[1:])
    assert pid_alive(shell) and pid_alive(child)
    started = time.monotonic()
    code = await asyncio.to_thread(daemon.stop, signal.SIGTERM, 12)
    elapsed = time.monotonic() - started
    assert code == 0, daemon.stderr()
    # SPEC §6: SIGTERM, then SIGKILL after 5 s; exit within 10 s.
    assert 4.5 <= elapsed < 10, elapsed
    assert not pid_alive(shell) and not pid_alive(child)
    with sqlite3.connect(daemon.data_dir / "backend.sqlite") as db:
        status = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    assert status == "canceled"


async def test_a_50_mb_flood_keeps_the_daemon_bounded_and_the_tail(daemon: Backend) -> None:
    rpc = await open_rpc(daemon.url)
    before = daemon.rss_kib()
    flood = {"id": "flood-50mb", "type": "flood.event", "payload": {"lines": 125_000}}
    run_id = (await rpc.call("flow.dispatch", flood))["runIds"][0]
    peak = before

    async def finished() -> dict[str, Any] | None:
        nonlocal peak
        run: dict[str, Any] = (await rpc.call("flow.getRun", {"runId": run_id}))["run"]
        peak = max(peak, daemon.rss_kib())
        return None if run["status"] in ("queued", "running") else run

    run = await until(finished, "the flood run to finish")
    assert run["status"] == "completed", run["error"]
    tail = run["stdoutTail"]
    assert len(tail.encode()) <= 64 * 1024
    assert tail.endswith('FLOW_RESULT {"status": "completed"}\n')
    assert tail.splitlines()[-2] == "x" * 400
    assert peak - before < 32 * 1024, (before, peak)
    assert "runs" in await rpc.call("flow.listRuns", {"limit": 1})
    await rpc.ws.close()


class _FailsAfterTheStep(LocalExecutor):
    """Runs the step for real, then fails the way the backend's own machinery can once a step
    has started: out of descriptors while noting or following it (what a daemon at its
    descriptor limit met), or a bug; ``grouped``: inside a task group, as the step's output is
    followed, so the error comes wrapped in an exception group."""

    def __init__(self, problem: Exception, grouped: bool) -> None:
        super().__init__()
        self.problem = problem
        self.grouped = grouped

    async def run(self, invocation: StepInvocation, **how: Any) -> StepOutcome:
        await super().run(invocation, **how)
        if not self.grouped:
            raise self.problem
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._fail)
        raise AssertionError("the task group raised")

    async def _fail(self) -> None:
        raise self.problem


EMFILE = "[Errno 24] Too many open files"


@pytest.mark.parametrize(
    ("problem", "grouped", "logged", "error"),
    [
        (
            OSError(errno.EMFILE, "Too many open files"),
            False,
            "step.not_followed",
            f"the backend could not run the step: {EMFILE}",
        ),
        (
            OSError(errno.EMFILE, "Too many open files"),
            True,
            "step.not_followed",
            f"the backend could not run the step: {EMFILE}",
        ),
        (RuntimeError("a bug"), False, "step.crashed", "internal error: a bug"),
        (RuntimeError("a bug"), True, "step.crashed", "internal error: "),
    ],
    ids=["emfile", "emfile-in-a-task-group", "bug", "bug-in-a-task-group"],
)
async def test_a_step_the_backend_cannot_follow_fails_its_run_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    problem: Exception,
    grouped: bool,
    logged: str,
    error: str,
) -> None:
    """The machine's trouble (here out of descriptors) fails the run and is logged as one line
    naming the problem, no traceback; only a bug in this program logs its traceback. Either
    way the run ends failed, saying why, and the queue goes on."""
    root = write_flows(tmp_path / "ws")
    store = BackendStore(tmp_path / "data")
    service = in_process_service(root, store, _FailsAfterTheStep(problem, grouped))
    queue = service.queue
    async with anyio.create_task_group() as tg:
        await tg.start(queue.serve)
        ended = []
        for n in range(2):
            event = {"id": f"trouble-{n}", "type": "demo.event"}
            reply = msgspec.to_builtins(await service.call("flow.dispatch", event))
            ended += await queue.wait_for(reply["runIds"])
        await queue.shutdown()
    store.close()
    err = capsys.readouterr().err
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [run.status for run in ended] == ["failed"] * 2
    assert all((run.error or "").startswith(error) for run in ended), ended
    said = [entry for entry in logs if entry["event"] == logged]
    assert len(said) == 2
    assert all(("exception" in entry) == (logged == "step.crashed") for entry in said)
    if logged == "step.not_followed":
        assert said[0]["problem"] == EMFILE
        assert not any(entry["event"] == "step.crashed" for entry in logs)
