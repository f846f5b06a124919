"""Faults of a cluster: a worker killed mid-step, the backend killed while steps run on workers,
Redis paused during a burst. Every run ends with the status its step produced, and no run's step
executes twice at once (nor twice at all, when its first execution ended).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import anyio
from conftest import Cluster, event, log_lines, pid_gone
from support.waiting import until, wait_until
from support.wire import Rpc, open_rpc


async def ended(rpc: Rpc, run_id: str, within: float = 30) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        run: dict[str, Any] = (await rpc.call("flow.getRun", {"runId": run_id}))["run"]
        return run if run["status"] not in ("queued", "running") else None

    return await until(check, f"run {run_id} to end", within=within)


def starts(log: Path, run_id: str) -> list[list[str]]:
    return [line.split() for line in log_lines(log) if line.startswith(f"start {run_id} ")]


async def test_a_worker_killed_mid_step_takes_its_step_along_and_the_run_moves_on(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Acceptance 2: the worker's main process SIGKILLed while its step runs (step timeout
    5 s): the step dies with it, the run is delivered again to the other worker and ends
    ``completed``; the two executions never overlap (the step itself checks, in a shared
    log, that no earlier execution of its run is alive when it starts)."""
    first = cluster.worker("w1")
    backend = cluster.backend()
    rpc = await open_rpc(backend.url)
    await rpc.call("flow.subscribe", {})
    log = tmp_path / "executions.log"
    reply = await rpc.call(
        "flow.dispatch", event("kill-worker", "cluster.gate", log=str(log), seconds=2)
    )
    run_id = reply["runIds"][0]
    line = await rpc.note("flow.run.output", lambda p: p["runId"] == run_id, timeout=15)
    pid = int(line["params"]["line"].split()[1])
    second = cluster.worker("w2")
    first.stop(signal.SIGKILL)
    wait_until(lambda: pid_gone(pid), "the step to die with its worker", within=5)
    run = await ended(rpc, run_id)
    assert run["status"] == "completed", run
    assert run["resultStatus"] == "completed", run
    executions = starts(log, run_id)
    assert [e[3] for e in executions] == [str(first.root), str(second.root)], log_lines(log)
    assert not [x for x in log_lines(log) if x.startswith("OVERLAP")], log_lines(log)
    ends = [x for x in log_lines(log) if x.startswith("end ")]
    assert ends == [f"end {run_id} {executions[1][2]}"], "only the second execution ended"


async def test_a_killed_backend_takes_up_the_runs_its_workers_go_on_with(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Acceptance 3: the backend SIGKILLed while two steps run on workers. One step ends while
    the backend is down, the other after it is back; both runs end with the status their step
    printed, and each record holds the output from before and after the restart."""
    cluster.worker("w1")
    backend = cluster.backend()
    rpc = await open_rpc(backend.url)
    await rpc.call("flow.subscribe", {})
    gates = {"early": tmp_path / "gate-early", "late": tmp_path / "gate-late"}
    statuses = {"early": "changed", "late": "needs_intervention"}
    run_ids: dict[str, str] = {}
    for name, gate in gates.items():
        reply = await rpc.call(
            "flow.dispatch",
            event(f"restart-{name}", "cluster.gate", gate=str(gate), status=statuses[name]),
        )
        run_ids[name] = reply["runIds"][0]
    for run_id in run_ids.values():
        await rpc.note("flow.run.output", lambda p, r=run_id: p["runId"] == r, timeout=15)
    await rpc.ws.close()
    backend.stop(signal.SIGKILL)
    gates["early"].touch()
    redis = cluster.redis.client()
    wait_until(
        lambda: redis.exists(f"workspace:run:{run_ids['early']}:done"),
        "the early step to end on its worker while the backend is down",
        within=5,
    )
    again = cluster.backend()
    gates["late"].touch()
    rpc = await open_rpc(again.url)
    for name, run_id in run_ids.items():
        run = await ended(rpc, run_id)
        assert run["status"] == "completed", run
        assert run["resultStatus"] == statuses[name], run
        assert "before " in run["stdoutTail"] and "after" in run["stdoutTail"], run


async def test_redis_paused_during_a_burst_every_run_completes_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Acceptance 7: Redis SIGSTOPped for 10 s during a burst of 40 events: the backend keeps
    acknowledging events, and after Redis resumes all 40 runs complete, each step executed
    exactly once."""
    cluster.worker("w1")
    cluster.worker("w2")
    backend = cluster.backend()
    rpc = await open_rpc(backend.url)
    log = tmp_path / "executions.log"
    run_ids: list[str] = []

    async def dispatch(i: int) -> None:
        reply = await rpc.call("flow.dispatch", event(f"burst-{i}", "cluster.gate", log=str(log)))
        assert reply["status"] == "accepted"
        run_ids.extend(reply["runIds"])

    for i in range(10):
        await dispatch(i)
    cluster.redis.pause()
    paused = time.monotonic()
    with anyio.fail_after(5):  # acknowledged while Redis is away
        for i in range(10, 40):
            await dispatch(i)
    await anyio.sleep(max(0.0, 10 - (time.monotonic() - paused)))  # the pause is the scenario
    cluster.redis.resume()
    for run_id in run_ids:
        run = await ended(rpc, run_id, within=40)
        assert run["status"] == "completed", run
    counts = {run_id: len(starts(log, run_id)) for run_id in run_ids}
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
