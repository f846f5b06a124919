"""Steps that misbehave inside a real daemon: ignore SIGTERM, flood 50 MB of output."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from support.backend import Backend
from support.processes import pid_alive
from support.waiting import until
from support.wire import open_rpc

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
