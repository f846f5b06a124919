"""Setting a cluster up and its bad input: doctor's broker and workers checks, a broker URL
refused, a worker that lacks a flow or has another version of it, a broker that is not there
yet when the backend or a worker starts."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, RedisServer, Worker, event, write_cluster_flows
from support.backend import WORKSPACE, free_port
from support.waiting import until
from support.wire import Rpc, http, open_rpc


def workspace(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [str(WORKSPACE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def start_worker(root: Path, broker: str) -> subprocess.Popen[str]:
    argv = [str(WORKSPACE), "--workspace-root", str(root), "worker", "--broker", broker]
    return subprocess.Popen(
        [*argv, "--name", "w1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


async def ended(rpc: Rpc, run_id: str) -> dict:  # type: ignore[type-arg]
    async def check() -> dict | None:  # type: ignore[type-arg]
        run = (await rpc.call("flow.getRun", {"runId": run_id}))["run"]
        return run if run["status"] not in ("queued", "running") else None

    return await until(check, f"run {run_id} to end", within=30)


def test_doctor_checks_the_broker_and_lists_the_workers_that_answer(cluster: Cluster) -> None:
    """``doctor`` with ``[workspace.executor] kind = "celery"``: the broker answers and both
    workers are named; with Redis stopped the broker check fails, saying runs wait."""
    root = cluster.backend_root
    (root / "workspace.toml").write_text(
        f'[workspace]\nname = "c"\n[workspace.executor]\nkind = "celery"\n'
        f'broker = "{cluster.redis.url}"\n'
    )
    cluster.worker("w1")
    cluster.worker("w2")
    done = workspace("--workspace-root", str(root), "doctor", "--json")
    checks = {c["check"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["broker"]["status"] == "ok", checks
    assert checks["workers"]["status"] == "ok", checks
    assert "w1" in checks["workers"]["message"] and "w2" in checks["workers"]["message"]
    cluster.redis.stop()
    done = workspace("--workspace-root", str(root), "doctor", "--json")
    checks = {c["check"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["broker"]["status"] == "fail", checks
    assert "does not answer" in checks["broker"]["message"]
    assert done.returncode == 1


def test_a_remote_broker_without_a_password_is_refused(tmp_path: Path) -> None:
    """A broker URL off this machine without a password: exit 2, one line."""
    for args in (
        ("worker", "--broker", "redis://10.1.2.3:6379/0"),
        ("backend", "--port", "0", "--executor", "celery", "--broker", "redis://10.1.2.3/0"),
    ):
        done = workspace("--workspace-root", str(tmp_path), *args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "has no password" in lines[0], done.stderr


def drop_hello(root: Path) -> None:
    shutil.rmtree(root / "flows" / "hello")


def change_gate(root: Path) -> None:
    script = root / "flows" / "gate" / "gate.py"
    script.write_text(script.read_text() + "# another version\n")


@pytest.mark.parametrize(
    ("spoil", "kind", "reason"),
    [
        (drop_hello, "cluster.hello", "worker w1 has no flow step hello/say"),
        (change_gate, "cluster.gate", "flow package 'gate' differs from the backend's"),
    ],
    ids=["missing", "differs"],
)
async def test_a_worker_without_the_backends_flow_ends_the_run_failed_saying_so(
    cluster: Cluster, spoil: Callable[[Path], None], kind: str, reason: str
) -> None:
    """A worker that lacks the run's flow, or holds another version of it (one file differs,
    so does the package's fingerprint), runs none of it: the run ends ``failed`` naming the
    worker and the package."""
    root = write_cluster_flows(cluster.base / "w1-ws")
    spoil(root)
    cluster.worker("w1", root=root)
    backend = cluster.backend()
    rpc = await open_rpc(backend.url)
    reply = await rpc.call("flow.dispatch", event("spoiled", kind))
    run = await ended(rpc, reply["runIds"][0])
    assert run["status"] == "failed"
    assert reason in run["error"], run


async def test_runs_wait_for_a_broker_that_is_not_there_yet(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The broker is down when the backend and a worker start: the backend still acknowledges
    events, says why it is not ready, the worker retries with backoff and logs it; once Redis
    is there the run completes."""
    cluster.redis.stop()
    port = free_port()
    later = f"redis://127.0.0.1:{port}/0"
    cluster.redis.port = port  # the backend and the worker use this URL from here on
    backend = cluster.backend()
    rpc = await open_rpc(backend.url)
    reply = await rpc.call("flow.dispatch", event("early", "cluster.hello"))
    assert reply["status"] == "accepted"

    def not_ready() -> dict[str, Any] | None:
        status, body = http("GET", backend.http + "/readyz")
        return body if status == 503 else None

    # The first run finds the broker gone; /readyz then says why, and later runs wait queued.
    body = await until(not_ready, "/readyz to say the broker is down")
    assert body["executor"]["kind"] == "celery"
    assert "not reachable" in body["executor"]["problem"], body
    second = (await rpc.call("flow.dispatch", event("second", "cluster.hello")))["runIds"][0]
    waiting_run = (await rpc.call("flow.getRun", {"runId": second}))["run"]
    assert waiting_run["status"] == "queued", waiting_run
    worker_root = write_cluster_flows(cluster.base / "w1-ws")
    waiting = start_worker(worker_root, later)
    try:
        assert waiting.stderr is not None
        line = waiting.stderr.readline()
        while "Trying again" not in line and "Cannot connect" not in line:
            line = waiting.stderr.readline()
            assert line, "the worker said nothing about the broker"
        server = RedisServer(tmp_path / "redis-later", port=port)
        try:
            for run_id in (reply["runIds"][0], second):
                run = await ended(rpc, run_id)
                assert run["status"] == "completed", run
            assert http("GET", backend.http + "/readyz")[0] == 200
        finally:
            server.stop()
    finally:
        waiting.kill()
        waiting.wait()
    assert "broker.unreachable" in backend.stderr()


__all__ = ["Worker"]
