"""Runs through Celery workers: many at once on two workers, output streamed, cancel.

Before the Celery executor every step ran as a subprocess of the backend; here the backend runs
``--executor celery`` and two ``workspace worker`` processes, each with its own copy of the
workspace, run the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from conftest import Cluster, event, log_lines, pid_gone
from support.waiting import until, wait_until
from support.wire import open_rpc

TERMINAL = ("completed", "failed", "canceled")


async def test_forty_trivial_events_complete_on_both_workers_with_output_streamed(
    cluster: Cluster,
) -> None:
    """Acceptance 1: 40 events → 40 runs ``completed``, both workers used, every run's output
    line reaching a subscribed client."""
    first, second = cluster.worker("w1"), cluster.worker("w2")
    backend = cluster.backend()
    rpc = await open_rpc(backend.url)
    await rpc.call("flow.subscribe", {})
    sender = await open_rpc(backend.url)
    run_ids: list[str] = []
    for i in range(40):
        reply = await sender.call("flow.dispatch", event(f"hello-{i}", "cluster.hello"))
        run_ids.extend(reply["runIds"])
    assert len(run_ids) == 40
    roots: dict[str, str] = {}
    ended: dict[str, str] = {}
    with anyio.fail_after(30):
        while len(ended) < 40:
            await rpc.read_into_inboxes()
            for note in rpc.notes:
                params = note["params"]
                if note["method"] == "flow.run.output" and params["line"].startswith("on "):
                    roots[params["runId"]] = params["line"].removeprefix("on ")
                elif note["method"] == "flow.run.updated":
                    run = params["run"]
                    if run["status"] in TERMINAL:
                        ended[run["id"]] = run["status"]
            rpc.notes.clear()
    assert set(ended) == set(run_ids)
    assert set(ended.values()) == {"completed"}, ended
    assert set(roots) == set(run_ids), "every run's line reached the subscriber"
    assert set(roots.values()) == {str(first.root), str(second.root)}, "both workers ran steps"


async def test_cancel_reaches_the_worker_and_its_process_group(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Acceptance 4: ``flow.cancelRun`` on a run executing on a worker: ``canceled`` within 5 s
    and the step's process group is gone."""
    cluster.worker("w1")
    backend = cluster.backend()
    rpc = await open_rpc(backend.url)
    await rpc.call("flow.subscribe", {})
    gate = tmp_path / "never"
    reply = await rpc.call("flow.dispatch", event("cancel-me", "cluster.gate", gate=str(gate)))
    run_id = reply["runIds"][0]
    line = await rpc.note("flow.run.output", lambda p: p["runId"] == run_id, timeout=15)
    pid = int(line["params"]["line"].split()[1])
    started = anyio.current_time()
    result = await rpc.call("flow.cancelRun", {"runId": run_id})
    assert result["run"]["status"] == "canceled", result
    assert anyio.current_time() - started < 5
    wait_until(lambda: pid_gone(pid), "the step's process group to be gone", within=5)


def runs_of(rpc_result: dict[str, Any]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = rpc_result["runs"]
    return runs


__all__ = ["log_lines", "until"]
