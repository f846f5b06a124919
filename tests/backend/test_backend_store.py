"""The backend store on real SQLite: one-transaction dispatch, duplicates, recovery."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgspec
import pytest

from workspace_adapter.backend.records import DispatchRecord, new_flow_run
from workspace_adapter.backend.store import BackendStore
from workspace_adapter.base.sqlitefile import SchemaVersionError


def event(event_id: str) -> dict[str, object]:
    return {"id": event_id, "type": "t", "receivedAt": "2026-01-01T00:00:00.000Z", "payload": {}}


def test_wal_and_schema_version(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    mode = store.transaction(lambda db: db.execute("PRAGMA journal_mode").fetchone()[0])
    sync = store.transaction(lambda db: db.execute("PRAGMA synchronous").fetchone()[0])
    assert (mode, sync) == ("wal", 1)
    store.close()
    with sqlite3.connect(tmp_path / "backend.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    BackendStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "backend.sqlite") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaVersionError, match="schema version 99"):
        BackendStore(tmp_path)


def test_duplicate_returns_the_first_runs(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    runs = [new_flow_run("e1", "f", "s1"), new_flow_run("e1", "f", "s2")]
    first = store.dispatch(event("e1"), runs)
    assert first.status == "accepted" and first.run_ids == [r.id for r in runs]
    again = store.dispatch(event("e1"), [new_flow_run("e1", "f", "s1")])
    assert (again.status, again.run_ids) == ("duplicate", first.run_ids)
    assert len(store.runs_of_event("e1")) == 2
    replay = new_flow_run("e1", "f", "s1", replay=True)
    store.add_runs([replay])
    assert store.dispatch(event("e1"), []).run_ids == first.run_ids
    assert replay.id.endswith("_replay")


def test_finish_first_end_wins_and_recovery(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    a, b, c = (new_flow_run("e", "f", n) for n in ("a", "b", "c"))
    store.dispatch(event("e"), [a, b, c])
    assert store.mark_running(a.id) is not None
    assert store.mark_running(a.id) is None
    done = store.finish_run(b.id, status="canceled", error="canceled")
    assert done is not None and done.status == "canceled" and done.completed_at
    assert store.finish_run(b.id, status="completed") is None
    store.close()
    reopened = BackendStore(tmp_path)
    # A run left running is handed back as it is: the run queue takes it up from its files.
    running, queued = reopened.recover()
    assert [(r.id, r.status, r.error) for r in running] == [(a.id, "running", None)]
    assert [r.id for r in queued] == [c.id]
    listed = reopened.list_runs("e", None, 10)
    assert {r.id for r in listed} == {a.id, b.id, c.id}
    assert [r.id for r in reopened.list_runs(None, "canceled", 10)] == [b.id]
    assert reopened.list_events(None, 10)[0]["id"] == "e"
    assert reopened.list_events("other", 10) == []


def test_wire_shape_has_result_json(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    run = new_flow_run("e", "flow", "step")
    store.dispatch(event("e"), [run])
    store.mark_running(run.id)
    done = store.finish_run(
        run.id, status="completed", result_status="changed", result={"status": "changed"}
    )
    assert done is not None
    wire = msgspec.to_builtins(done.to_wire())
    assert wire["resultJson"] == '{"flow":"flow","step":"step","result":{"status":"changed"}}'
    assert wire["id"].startswith("run_") and len(wire["id"]) == 16
    for key in (
        "eventId",
        "flowName",
        "stepName",
        "status",
        "resultStatus",
        "result",
        "error",
        "stdoutTail",
        "stderrTail",
        "createdAt",
        "startedAt",
        "completedAt",
    ):
        assert key in wire


async def test_group_commit_answers_each_write_on_its_own(tmp_path: Path) -> None:
    store = BackendStore(tmp_path)
    clash = new_flow_run("e0", "f", "s")
    writes = [
        store.writer.dispatch(event(f"e{i}"), [new_flow_run(f"e{i}", "f", "s")]) for i in range(8)
    ]
    # In the same batch: a repeat of e1 (a duplicate of the write queued before it) and a
    # write that fails (two runs with one id), which must not sink its neighbours.
    repeat = store.writer.dispatch(event("e1"), [new_flow_run("e1", "f", "s")])
    taken = store.writer.add_runs([clash, clash])
    results = await asyncio.gather(*writes, repeat, taken, return_exceptions=True)
    records = [r for r in results[:8] if isinstance(r, DispatchRecord)]
    assert [r.status for r in records] == ["accepted"] * 8
    assert isinstance(results[8], DispatchRecord) and results[8].status == "duplicate"
    assert results[8].run_ids == records[1].run_ids
    assert isinstance(results[9], sqlite3.IntegrityError)
    reopened = BackendStore(tmp_path)
    assert len(reopened.list_events(None, 100)) == 8
    assert [r.id for r in reopened.runs_of_event("e0")] == records[0].run_ids
    run = records[2].runs[0]
    started = await store.writer.mark_running(run.id)
    assert started is not None and started.status == "running"
    ended = await store.writer.finish_run(run.id, status="completed")
    assert ended is not None and reopened.get_run(run.id) == ended
    store.close()
    reopened.close()
