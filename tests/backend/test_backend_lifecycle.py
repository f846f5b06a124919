"""Daemon life and faults: SIGKILL recovery, cancellation, SIGTERM, tokens, slow subscribers."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from support.backend import WORKSPACE, Backend
from support.flows import write_flows
from support.processes import pid_alive
from support.waiting import until
from support.wire import Rpc, http, open_rpc


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_flows(tmp_path / "ws")


@pytest.fixture
def daemon(root: Path, tmp_path: Path) -> Iterator[Backend]:
    backend = Backend(root, tmp_path / "data").start()
    yield backend
    backend.stop(signal.SIGKILL)


async def nap(backend: Backend, event_id: str) -> tuple[Rpc, str, int, int]:
    """A subscribed session and a ``sleep.event`` run under way: (rpc, run id, shell, child)."""
    rpc = await open_rpc(backend.url)
    await rpc.call("flow.subscribe", {})
    reply = await rpc.call("flow.dispatch", {"id": event_id, "type": "sleep.event"})
    run_id: str = reply["runIds"][0]
    shell, child = await child_of(rpc, run_id)
    return rpc, run_id, shell, child


async def child_of(rpc: Rpc, run_id: str) -> tuple[int, int]:
    """(shell pid, sleeping child pid) of a ``sleep.event`` run, from its first output line."""
    line = await rpc.note("flow.run.output", lambda p: p["runId"] == run_id)
    child = int(line["params"]["line"].split()[1])
    return parent_pid(child), child


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])


def run_status(data_dir: Path, run_id: str) -> tuple[str, str | None]:
    with sqlite3.connect(data_dir / "backend.sqlite") as db:
        row = db.execute("SELECT status, error FROM runs WHERE id = ?", (run_id,)).fetchone()
    return row[0], row[1]


async def test_cancel_kills_the_step_and_its_children(daemon: Backend) -> None:
    rpc, run_id, shell, child = await nap(daemon, "nap-cancel")
    assert pid_alive(shell) and pid_alive(child)
    started = time.monotonic()
    canceled = await rpc.call("flow.cancelRun", {"runId": run_id})
    assert canceled["run"]["status"] == "canceled"
    await until(lambda: not (pid_alive(shell) or pid_alive(child)), "the step's processes to go")
    assert time.monotonic() - started < 5
    again = await rpc.call("flow.cancelRun", {"runId": run_id})
    assert again["run"]["status"] == "canceled"
    await rpc.ws.close()


async def test_sigterm_cancels_runs_and_exits_zero(daemon: Backend) -> None:
    _rpc, run_id, shell, child = await nap(daemon, "nap-term")
    started = time.monotonic()
    code = await asyncio.to_thread(daemon.stop, signal.SIGTERM, 10)
    assert code == 0, daemon.stderr()
    assert time.monotonic() - started < 10
    assert run_status(daemon.data_dir, run_id)[0] == "canceled"
    assert not pid_alive(shell) and not pid_alive(child)


async def test_a_run_whose_step_died_with_the_backend_is_failed_on_restart(
    root: Path, tmp_path: Path
) -> None:
    """Neither a live step nor an exit status nor a result: only then "backend restarted"."""
    first = Backend(root, tmp_path / "data", "--concurrency", "1").start()
    rpc, running, _shell, child = await nap(first, "nap-kill")
    queued = (await rpc.call("flow.dispatch", {"id": "after-kill", "type": "demo.event"}))[
        "runIds"
    ][0]
    assert (await rpc.call("flow.getRun", {"runId": queued}))["run"]["status"] == "queued"
    first.stop(signal.SIGKILL)
    # The step outlives a SIGKILLed backend (its own session); an operator kills all of it.
    os.killpg(os.getpgid(child), signal.SIGKILL)
    await until(lambda: not pid_alive(child), "the step's processes to go")
    second = Backend(root, tmp_path / "data", "--concurrency", "1").start()
    try:
        rpc = await open_rpc(second.url)
        await rpc.call("flow.subscribe", {})

        async def taken_up() -> dict[str, Any] | None:
            run = (await rpc.call("flow.getRun", {"runId": running}))["run"]
            return run if run["status"] != "running" else None

        crashed = await until(taken_up, "the left run to be taken up")
        assert (crashed["status"], crashed["error"]) == ("failed", "backend restarted")
        run = (await rpc.call("flow.getRun", {"runId": queued}))["run"]
        if run["status"] != "completed":
            await rpc.note(
                "flow.run.updated",
                lambda p: p["run"]["id"] == queued and p["run"]["status"] == "completed",
            )
        events = await rpc.call("flow.listEvents", {})
        assert {e["id"] for e in events["events"]} == {"nap-kill", "after-kill"}
        await rpc.ws.close()
    finally:
        assert second.stop() == 0


async def test_token_guards_every_route_but_health(root: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    daemon = Backend(root, tmp_path / "data", "--token-file", str(token_file)).start()
    try:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await open_rpc(daemon.url)
        assert refused.value.response.status_code == 401
        # The probe paths are open to HTTP only: an upgrade there still needs the token.
        for probe in ("/healthz", "/readyz"):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await open_rpc(daemon.url + probe)
            assert refused.value.response.status_code == 401
        with pytest.raises(websockets.InvalidStatus):
            await open_rpc(daemon.url, additional_headers={"Authorization": "Bearer wrong"})
        rpc = await open_rpc(
            daemon.url, additional_headers={"Authorization": "Bearer s3cret-token"}
        )
        assert "runs" in await rpc.call("flow.listRuns", {})
        await rpc.ws.close()
        assert http("GET", daemon.http + "/healthz")[0] == 200
        assert http("GET", daemon.http + "/readyz")[0] == 200
        assert http("GET", daemon.http + "/runs")[0] == 401
        assert http("POST", daemon.http + "/events", b'{"id":"x","type":"t"}')[0] == 401
        authorized = {"Authorization": "Bearer s3cret-token"}
        assert http("POST", daemon.http + "/events", b'{"id":"x","type":"t"}', authorized)[0] == 202
        with pytest.raises(websockets.InvalidStatus) as cross:
            await open_rpc(daemon.url, additional_headers=authorized, origin="https://x.example")
        assert cross.value.response.status_code == 403
    finally:
        assert daemon.stop() == 0


def test_post_events_takes_the_token_or_a_signature(root: Path, tmp_path: Path) -> None:
    from workspace_adapter.protocol import sign_body

    (tmp_path / "token").write_text("s3cret-token\n")
    (tmp_path / "secret").write_text("s3cret-key\n")
    daemon = Backend(
        root,
        tmp_path / "data",
        "--token-file",
        str(tmp_path / "token"),
        "--secret-file",
        str(tmp_path / "secret"),
    ).start()
    try:
        url = daemon.http + "/events"
        body = b'{"id":"both-1","type":"t"}'
        assert http("POST", url, body)[0] == 401
        assert http("POST", url, body, {"Authorization": "Bearer wrong"})[0] == 401
        assert http("POST", url, body, {"Authorization": "Bearer s3cret-token"})[0] == 202
        signed = {"x-patch-flow-signature-256": sign_body("s3cret-key", body)}
        assert http("POST", url, body, signed)[0] == 202
        bad = {"x-flow-signature-256": "sha256=00", **signed}
        assert http("POST", url, body, bad)[0] == 202  # either header may carry it
        assert http("GET", daemon.http + "/events/both-1")[0] == 401
    finally:
        assert daemon.stop() == 0


def start_refused(
    root: Path, data_dir: Path, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``workspace backend --port 0`` with ``args``, run to its exit (it should refuse to start)."""
    return subprocess.run(
        [
            str(WORKSPACE),
            "backend",
            "--port",
            "0",
            "--cwd",
            str(root),
            "--data-dir",
            str(data_dir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


@pytest.mark.parametrize("name", ["CODEX_FLOW_BACKEND_SECRET", "CODEX_WORKSPACE_BACKEND_TOKEN"])
def test_passing_the_secret_or_token_to_steps_is_refused(
    root: Path, tmp_path: Path, name: str
) -> None:
    done = start_refused(
        root, tmp_path / "data", "--env-allow", name, env={**os.environ, name: "do-not-leak"}
    )
    assert done.returncode == 2, done.stderr
    assert f"--env-allow {name}" in done.stderr and "never passed to steps" in done.stderr
    assert "listening" not in done.stdout


def test_non_loopback_without_token_is_refused(root: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CODEX_WORKSPACE_BACKEND_TOKEN"}
    done = start_refused(root, tmp_path / "data", "--host", "0.0.0.0", env=env)
    assert done.returncode == 2
    assert "non-loopback" in done.stderr and "token" in done.stderr
    assert "listening" not in done.stdout


async def test_a_subscriber_that_never_reads_is_closed(daemon: Backend) -> None:
    # Default max_queue: the client library stops reading the socket once 16 frames wait.
    silent = await open_rpc(daemon.url)
    await silent.call("flow.subscribe", {})
    other = await open_rpc(daemon.url)
    await other.call("flow.subscribe", {"eventId": "something-else"})
    rss_before = daemon.rss_kib()
    flood = {"id": "flood-1", "type": "flood.event", "payload": {"lines": 100_000}}
    run_id = (await other.call("flow.dispatch", flood))["runIds"][0]
    # The other client keeps getting prompt answers while about 50 MB of output streams.
    slowest, peak = 0.0, rss_before

    async def finished() -> str | None:
        nonlocal slowest, peak
        started = time.monotonic()
        status: str = (await other.call("flow.getRun", {"runId": run_id}))["run"]["status"]
        slowest = max(slowest, time.monotonic() - started)
        peak = max(peak, daemon.rss_kib())
        return None if status in ("queued", "running") else status

    assert await until(finished, "the flood run to finish") == "completed"
    assert slowest < 1.0
    assert peak - rss_before < 64 * 1024, (rss_before, peak)
    # Now the silent client reads: what was in flight, then a 1008 close.
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(silent.ws.recv(), 20)
    assert silent.ws.close_code == 1008
    assert "runs" in await other.call("flow.listRuns", {"limit": 1})
    await other.ws.close()
