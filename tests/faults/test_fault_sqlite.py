"""SQLite faults with real files: a second process holding the write lock, and a full disk.

The lock is a real ``BEGIN EXCLUSIVE`` held by another process. The full disk is a real
``SQLITE_FULL`` from ``PRAGMA max_page_count`` on the connection that writes (the pragma is
per connection, so "space returns" when it is raised again, or on the next connection).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from support.backend import WORKSPACE, Backend, in_process_service
from support.flows import write_flows
from support.wire import http, open_rpc

from workspace_adapter.backend import mutations
from workspace_adapter.backend.http import build_routes
from workspace_adapter.backend.records import new_flow_run
from workspace_adapter.backend.store import BackendStore
from workspace_adapter.base.errors import UserError
from workspace_adapter.base.sqlitefile import StoreUnavailable
from workspace_adapter.local.state import StateStore
from workspace_adapter.local.taskruns import TaskRun, new_task_run

HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
if sys.argv[2] == "until-told":
    sys.stdin.readline()
else:
    time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


class LockHolder:
    """Another process that holds ``BEGIN EXCLUSIVE`` on a database for ``seconds``.

    Without ``seconds`` it holds the lock until :meth:`release`.
    """

    def __init__(self, path: Path, seconds: float | None = None) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                HOLDER,
                str(path),
                "until-told" if seconds is None else str(seconds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self) -> None:
        assert self.proc.wait(30) == 0


def event(event_id: str, kind: str = "demo.event", size: int = 0) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": kind,
        "receivedAt": "2026-11-24T12:00:00.000Z",
        "payload": {"blob": "x" * size},
    }


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


# --- locked -----------------------------------------------------------------------------------


def test_the_backend_store_waits_out_a_short_exclusive_lock(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    store.dispatch(event("before"), [new_flow_run("before", "demo", "hello")])
    holder = LockHolder(store.path, 1.0)
    started = time.monotonic()
    record = store.dispatch(event("during"), [new_flow_run("during", "demo", "hello")])
    assert time.monotonic() - started >= 0.8
    assert record.status == "accepted"
    holder.wait()
    assert store.get_event("before") is not None and store.get_event("during") is not None
    assert len(store.runs_of_event("during")) == 1
    store.close()


def test_workspace_run_waits_out_a_locked_state(tmp_path: Path) -> None:
    (tmp_path / "workspace.toml").write_text(
        '[workspace]\nname = "locked"\n[[workspace.tasks]]\nid = "one"\nkind = "command"\n'
        'command = ["true"]\n'
    )
    run = [str(WORKSPACE), "--workspace-root", str(tmp_path), "run", "one", "--json"]
    assert subprocess.run(run, capture_output=True, timeout=30).returncode == 0
    holder = LockHolder(tmp_path / ".workspace" / "local" / "state.sqlite3", 1.0)
    started = time.monotonic()
    done = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 0.8
    holder.wait()
    listed = subprocess.run(
        [str(WORKSPACE), "--workspace-root", str(tmp_path), "runs", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    runs = json.loads(listed.stdout)
    runs = runs["runs"] if isinstance(runs, dict) else runs
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert json.loads(done.stdout)["id"] in {r["id"] for r in runs}


class LockedDispatch:
    """What a real daemon did while another process held its store past the busy timeout."""

    reply: dict[str, Any]
    health_seconds: float
    retry: dict[str, Any]
    before: dict[str, Any]
    integrity: str
    log: list[dict[str, Any]]


@pytest.fixture(scope="module")
def locked_dispatch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockedDispatch]:
    base = tmp_path_factory.mktemp("locked")
    daemon = Backend(write_flows(base / "ws"), base / "data").start()
    seen = LockedDispatch()

    async def scenario() -> None:
        rpc = await open_rpc(daemon.url)
        await rpc.call("flow.dispatch", {"id": "kept", "type": "demo.event"})
        holder = LockHolder(daemon.data_dir / "backend.sqlite", 5.5)
        health: list[float] = []

        def probe() -> None:
            time.sleep(0.5)  # while the dispatch below waits on the lock
            began = time.monotonic()
            http("GET", daemon.http + "/healthz")
            health.append(time.monotonic() - began)

        prober = threading.Thread(target=probe)
        prober.start()
        seen.reply = await rpc.reply(
            await rpc.send("flow.dispatch", {"id": "while-locked", "type": "demo.event"})
        )
        await asyncio.to_thread(prober.join)
        seen.health_seconds = health[0]
        await asyncio.to_thread(holder.wait)
        seen.retry = await rpc.call("flow.dispatch", {"id": "while-locked", "type": "demo.event"})
        seen.before = await rpc.call("flow.getEvent", {"eventId": "kept"})
        await rpc.ws.close()

    try:
        asyncio.run(scenario())
    finally:
        assert daemon.stop() == 0, daemon.stderr()
    seen.integrity = integrity(daemon.data_dir / "backend.sqlite")
    seen.log = [json.loads(line) for line in daemon.stderr().splitlines() if line.startswith("{")]
    yield seen


def test_a_dispatch_against_a_locked_store_loses_nothing_and_a_retry_works(
    locked_dispatch: LockedDispatch,
) -> None:
    assert "error" in locked_dispatch.reply, locked_dispatch.reply
    assert locked_dispatch.retry["status"] == "accepted"  # the failed dispatch stored nothing
    assert locked_dispatch.retry["matched"] == 1
    assert locked_dispatch.before["event"]["id"] == "kept" and locked_dispatch.before["runs"]
    assert locked_dispatch.integrity == "ok"


def test_a_locked_store_is_a_clear_retryable_error(locked_dispatch: LockedDispatch) -> None:
    error = locked_dispatch.reply["error"]
    assert error["code"] == -32001, error
    assert error["message"] == "store busy (locked by another process); retry", error
    assert error["data"] == {"reason": "store_busy", "retryAfter": 1}, error


def test_a_locked_store_is_logged(locked_dispatch: LockedDispatch) -> None:
    busy = [e for e in locked_dispatch.log if e.get("event") == "dispatch.store_unavailable"]
    assert len(busy) == 1, locked_dispatch.log
    assert busy[0]["event_id"] == "while-locked" and busy[0]["reason"] == "busy"
    assert "locked" in busy[0]["problem"]


def test_other_clients_are_served_while_the_store_is_locked(
    locked_dispatch: LockedDispatch,
) -> None:
    assert locked_dispatch.health_seconds < 1.0, locked_dispatch.health_seconds


async def test_the_writer_waits_for_a_lock_off_the_loop(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    store.transaction(lambda db: db.execute("PRAGMA busy_timeout = 500"))
    holder = await asyncio.to_thread(LockHolder, store.path)
    writing = asyncio.create_task(
        store.writer.dispatch(event("locked"), [new_flow_run("locked", "demo", "hello")])
    )
    await asyncio.sleep(0)  # the write begins
    # This task runs while the write is pending: it waits for the lock off the loop. On the
    # loop, the write would have blocked it until the busy timeout and ended first.
    assert not writing.done()
    with pytest.raises(StoreUnavailable) as caught:
        await writing
    holder.release()
    assert caught.value.reason == "busy"
    assert str(caught.value) == "store busy (locked by another process); retry"
    assert store.get_event("locked") is None
    await asyncio.to_thread(holder.wait)
    record = await store.writer.dispatch(event("locked"), [new_flow_run("locked", "demo", "hello")])
    assert record.status == "accepted" and len(store.runs_of_event("locked")) == 1
    store.close()


async def test_post_events_against_a_locked_store_is_a_503_with_retry_after(
    tmp_path: Path,
) -> None:
    store = BackendStore(tmp_path / "data")
    store.transaction(lambda db: db.execute("PRAGMA busy_timeout = 300"))
    service = in_process_service(write_flows(tmp_path / "ws"), store)
    app = Starlette(routes=build_routes(service, secret=None, ready=lambda: True))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://backend") as client:
        holder = await asyncio.to_thread(LockHolder, store.path, 1.0)
        body = {"id": "http-locked", "type": "unmatched.event"}
        refused = await client.post("/events", json=body)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json() == {"error": "store busy (locked by another process); retry"}
        await asyncio.to_thread(holder.wait)
        accepted = await client.post("/events", json=body)
        assert accepted.status_code == 202 and accepted.json()["status"] == "accepted"
    store.close()


# --- full disk --------------------------------------------------------------------------------


def fill_backend_store(store: BackendStore) -> tuple[str, sqlite3.OperationalError]:
    """Dispatch big events until the store's disk is full; the id that failed, and why."""
    store.limit_pages(store.page_count() + 4)
    for i in range(50):
        try:
            store.dispatch(
                event(f"big-{i}", size=16_384), [new_flow_run(f"big-{i}", "demo", "hello")]
            )
        except sqlite3.OperationalError as exc:
            return f"big-{i}", exc
    raise AssertionError("the disk never filled")


def test_the_backend_store_on_a_full_disk_loses_nothing_and_resumes(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    for i in range(5):
        store.dispatch(event(f"kept-{i}"), [new_flow_run(f"kept-{i}", "demo", "hello")])
    failed, _ = fill_backend_store(store)
    # Nothing half-written: the event that did not fit has neither a row nor runs.
    assert store.get_event(failed) is None and store.runs_of_event(failed) == []
    assert integrity(store.path) == "ok"
    assert all(store.get_event(f"kept-{i}") is not None for i in range(5))
    # Space returns: the same id is accepted (not a duplicate), and runs go on.
    store.limit_pages(None)
    run = new_flow_run(failed, "demo", "hello")
    assert store.dispatch(event(failed, size=16_384), [run]).status == "accepted"
    assert store.mark_running(run.id) is not None
    finished = store.finish_run(run.id, status="completed", stdout_tail="y" * 65_536)
    assert finished is not None and finished.status == "completed"
    store.close()
    reopened = BackendStore(tmp_path)
    assert len(reopened.list_events(None, 100)) == 5 + int(failed.split("-")[1]) + 1
    reopened.close()


def test_the_backend_store_reports_a_full_disk_as_such(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    _, error = fill_backend_store(store)
    store.close()
    assert error.sqlite_errorname == "SQLITE_FULL", error


async def test_a_full_disk_sinks_only_the_write_that_did_not_fit(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    store.limit_pages(store.page_count() + 8)
    small = [event(f"small-{i}") for i in range(20)]
    # While another process holds the lock, no write can commit at once: they all queue for
    # the writer thread, and share group commits with the one that does not fit.
    holder = await asyncio.to_thread(LockHolder, store.path, 0.5)
    writes = [store.writer.dispatch(e, [new_flow_run(e["id"], "demo", "hello")]) for e in small]
    big = store.writer.dispatch(event("big", size=200_000), [new_flow_run("big", "demo", "hello")])
    results = await asyncio.gather(*writes, big, return_exceptions=True)
    await asyncio.to_thread(holder.wait)
    assert [getattr(r, "status", r) for r in results[:-1]] == ["accepted"] * 20
    assert isinstance(results[-1], StoreUnavailable), results[-1]
    assert str(results[-1]) == "store is full (SQLITE_FULL): free disk space"
    assert all(store.get_event(e["id"]) is not None for e in small)
    assert store.get_event("big") is None and store.runs_of_event("big") == []
    assert integrity(store.path) == "ok"
    store.close()


def fill_state(store: StateStore, record: TaskRun) -> BaseException:
    """Write ``record`` through the store's own transaction on a connection with no room."""
    try:
        with store.connect() as db:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")
            db.execute(
                "INSERT INTO runs (id, task_id, kind, status, started_at, stdout_tail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.task_id,
                    record.kind,
                    record.status,
                    record.started_at,
                    record.stdout_tail,
                ),
            )
    except (sqlite3.OperationalError, UserError) as exc:
        return exc
    raise AssertionError("the disk never filled")


def big_local_run() -> TaskRun:
    record = new_task_run("big", "command", dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC))
    record.stdout_tail = "z" * 65_536
    return record


def test_the_local_state_on_a_full_disk_loses_nothing_and_resumes(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state").open()
    kept = new_task_run("kept", "command", dt.datetime(2026, 11, 24, 11, tzinfo=dt.UTC))
    store.insert(kept)
    big = big_local_run()
    fill_state(store, big)
    assert integrity(store.path) == "ok"
    assert [r.id for r in store.runs()] == [kept.id]
    # A new connection has room again: the same record goes in.
    store.insert(big)
    assert {r.id for r in store.runs()} == {kept.id, big.id}


def test_the_local_state_reports_a_full_disk_as_such(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state").open()
    error = fill_state(store, big_local_run())
    # The CLI prints a UserError as one line and exits with its code, no traceback.
    assert isinstance(error, UserError), error
    assert error.exit_code == 1
    assert error.message == (
        f"state store {store.path}: the disk is full (SQLITE_FULL); free disk space and retry"
    )
    assert isinstance(error.__cause__, sqlite3.OperationalError)
    assert error.__cause__.sqlite_errorname == "SQLITE_FULL"


async def test_commit_now_never_waits_for_the_lock(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    first = new_flow_run("free", "demo", "hello")
    done, record = store.commit_now(lambda db: mutations.store_event(db, event("free"), [first]))
    assert done and record.status == "accepted"
    holder = await asyncio.to_thread(LockHolder, store.path, 1.0)
    held = new_flow_run("held", "demo", "hello")
    done, record = store.commit_now(lambda db: mutations.store_event(db, event("held"), [held]))
    # Refused while the other process still holds the lock: it did not wait for it.
    assert (done, record) == (False, None)
    assert holder.proc.poll() is None
    # The same write through the writer is queued and committed once the lock is free.
    queued = await store.writer.dispatch(event("held"), [held])
    assert queued.status == "accepted"
    await asyncio.to_thread(holder.wait)
    assert store.get_event("free") is not None and store.get_event("held") is not None
    store.close()
