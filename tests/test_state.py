"""The local run state: creation, claims, recovery of runs whose process died."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from workspace_adapter.base.errors import UserError
from workspace_adapter.base.times import iso
from workspace_adapter.local import state, taskruns
from workspace_adapter.local.state import StateStore
from workspace_adapter.local.taskruns import SlotState

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def slot(last: str) -> SlotState:
    return SlotState(last_slot=last, next_slot=None, schedule="* * * * *", timezone="UTC")


def test_creation_is_atomic_and_wal(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "local").open()
    assert store.path.is_file()
    store.close()  # the WAL's -wal/-shm files belong to an open connection
    assert sorted(p.name for p in store.directory.iterdir()) == ["state.lock", "state.sqlite3"]
    with store.connect(write=False) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
    assert (tmp_path / ".gitignore").read_text() == "*\n"


def test_concurrent_creation_builds_one_store(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def create() -> None:
        try:
            StateStore(tmp_path / "local").open().insert(taskruns.new_task_run("a", "command", NOW))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(StateStore(tmp_path / "local").runs()) == 4


def test_records_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "local").open()
    record = taskruns.new_task_run("a", "flow", NOW, slot="2026-11-24T12:00:00.000Z")
    store.insert(record)
    record.status, record.reason, record.run_ids = "changed", "rebased", ["run_1", "run_2"]
    record.event_id, record.finished_at = "workspace:x:a:1", iso(NOW)
    store.finish(record)
    assert store.runs("a") == [record]
    assert store.runs("other") == []


def test_a_claim_is_taken_by_one_tick_only(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "local").open()
    assert "a" in store.record_baselines([("a", slot("2026-11-24T11:00:00.000Z"))])
    assert "a" not in store.record_baselines([("a", slot("2026-11-24T11:30:00.000Z"))])
    first = taskruns.new_task_run("a", "command", NOW, slot="2026-11-24T12:00:00.000Z")
    second = taskruns.new_task_run("a", "command", NOW, slot="2026-11-24T12:00:00.000Z")
    # Both ticks planned from the same last slot; only the first claim wins.
    assert store.claim(first, "2026-11-24T11:00:00.000Z", slot(first.slot or "")) == "claimed"
    assert store.claim(second, "2026-11-24T11:00:00.000Z", slot(second.slot or "")) == "taken"
    assert [r.id for r in store.runs("a")] == [first.id]
    assert store.slot_states()["a"].last_slot == "2026-11-24T12:00:00.000Z"


def test_process_liveness(tmp_path: Path) -> None:
    me = os.getpid()
    assert state.process_alive(me, state.process_marker(me))
    assert not state.process_alive(me, "another-boot:123")
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not state.process_alive(gone.pid, None)
    assert not state.process_alive(None, None)


def test_readonly_store_creates_nothing(tmp_path: Path) -> None:
    writer = StateStore(tmp_path / "local").open()
    writer.insert(taskruns.new_task_run("a", "command", NOW))
    before = sorted(p.name for p in writer.directory.iterdir())
    reader = StateStore(tmp_path / "local", readonly=True).open()
    assert [r.task_id for r in reader.runs()] == ["a"]
    assert sorted(p.name for p in writer.directory.iterdir()) == before
    assert not StateStore(tmp_path / "nothing", readonly=True).open().exists()


def test_baselines_of_one_tick_are_one_transaction(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "local").open()
    assert "old" in store.record_baselines([("old", slot("2026-11-24T10:00:00.000Z"))])
    tasks = [(f"t{i}", slot("2026-11-24T11:00:00.000Z")) for i in range(2000)]
    recorded = store.record_baselines([("old", slot("2026-11-24T11:00:00.000Z")), *tasks])
    assert recorded == {task_id for task_id, _ in tasks}  # "old" already had its slot
    states = store.slot_states()
    assert states["old"].last_slot == "2026-11-24T10:00:00.000Z"
    assert len(states) == 2001
    assert store.record_baselines([]) == set()


def test_a_file_that_is_not_a_state_store_is_one_line_and_left_alone(tmp_path: Path) -> None:
    for content in (b"not a database\n", b""):
        directory = tmp_path / f"local-{len(content)}"
        directory.mkdir()
        (directory / state.DB_NAME).write_bytes(content)
        for readonly in (False, True):
            store = StateStore(directory, readonly=readonly)
            with pytest.raises(UserError) as caught:
                store.open().runs()
            assert "is not a readable state store" in caught.value.message
            assert "move it aside" in caught.value.message
        assert (directory / state.DB_NAME).read_bytes() == content


def test_a_state_store_of_another_schema_version_is_one_line_and_left_alone(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "local").open()
    store.close()
    with sqlite3.connect(store.path) as db:
        db.execute(f"PRAGMA user_version = {state.SCHEMA_VERSION + 1}")
    before = store.path.read_bytes()
    newer = f"schema version {state.SCHEMA_VERSION + 1}, this program reads {state.SCHEMA_VERSION}"
    for readonly in (False, True):
        with pytest.raises(UserError) as caught:
            StateStore(store.directory, readonly=readonly).open().runs()
        assert str(store.path) in caught.value.message
        assert newer in caught.value.message and "upgrade" in caught.value.message
    with pytest.raises(UserError) as caught:
        StateStore(store.directory).prune(iso(NOW))
    assert newer in caught.value.message
    assert store.path.read_bytes() == before
