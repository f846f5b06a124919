"""``workspace prune``: real stores made by the real code, a real daemon running meanwhile."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wire
from support.backend import WORKSPACE, Backend
from support.flows import write_flows
from support.waiting import wait_until

from workspace_adapter.base.times import iso
from workspace_adapter.cli import main
from workspace_adapter.local.state import StateStore
from workspace_adapter.local.taskruns import SlotState, new_task_run
from workspace_adapter.service.records import Records
from workspace_adapter.service.schema import SeenRelease

OLD = dt.datetime.now(dt.UTC) - dt.timedelta(days=90)
OLD_ISO = iso(OLD)


def prune(root: Path, *args: str) -> tuple[int, str, str]:
    """``workspace prune`` as its own process: exit code, stdout, stderr."""
    done = subprocess.run(
        [str(WORKSPACE), "prune", "--workspace-root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.returncode, done.stdout, done.stderr


def prune_json(root: Path, *args: str) -> dict[str, Any]:
    code, out, err = prune(root, "--json", *args)
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


def store_entry(document: dict[str, Any], name: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(s for s in document["stores"] if s["store"] == name)
    return entry


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / "workspace.toml").write_text(
        '[workspace]\nname = "prune"\n'
        '[[workspace.tasks]]\nid = "quick"\nkind = "command"\ncommand = ["true"]\n'
        '[[workspace.tasks]]\nid = "lonely"\nkind = "command"\ncommand = ["true"]\n',
        encoding="utf-8",
    )
    return folder


# --- flags and missing stores ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["30", "30 d", "d", "-1d", "1w", "1.5h"])
def test_a_bad_age_is_exit_2_naming_the_flag(
    root: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prune", "--workspace-root", str(root), f"--older-than={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --older-than:") and "\n" not in err


def test_missing_stores_are_skipped_and_never_created(root: Path) -> None:
    document = prune_json(root, "--older-than", "0s")
    assert [(s["store"], s["status"]) for s in document["stores"]] == [
        ("state", "missing"),
        ("backend", "missing"),
        ("records", "missing"),
    ]
    assert document["dryRun"] is False and document["cutoff"].endswith("Z")
    assert not (root / ".workspace").exists()
    code, out, _ = prune(root)
    assert code == 0 and out.count("no store, skipped") == 3


# --- local run state ---------------------------------------------------------------------------


def test_state_drops_old_finished_runs_and_keeps_what_tick_and_doctor_need(root: Path) -> None:
    for _ in range(2):
        assert main(["run", "quick", "--workspace-root", str(root)]) == 0
    store = StateStore.for_workspace(root, "local").open()
    # Old history injected through the store API: finished runs of both tasks, one old run
    # still going (this process is alive, so it is not "interrupted"), a baseline slot.
    for days in (60, 61, 62):
        old = new_task_run("quick", "command", dt.datetime.now(dt.UTC) - dt.timedelta(days=days))
        old.status, old.finished_at = "completed", old.started_at
        store.insert(old)
    lonely = new_task_run("lonely", "command", OLD)
    lonely.status, lonely.finished_at = "failed", lonely.started_at
    store.insert(lonely)
    going = new_task_run("quick", "command", OLD)
    store.insert(going)
    assert "lonely" in store.record_baselines([("lonely", SlotState(last_slot=OLD_ISO))])
    before = [r.id for r in store.runs(limit=100)]
    assert len(before) == 7

    dry = prune_json(root, "--dry-run")
    assert store_entry(dry, "state") | {"path": ""} == {
        "store": "state",
        "path": "",
        "status": "dry-run",
        "deleted": {"runs": 3},
    }
    assert [r.id for r in store.runs(limit=100)] == before

    document = prune_json(root)
    assert store_entry(document, "state")["deleted"] == {"runs": 3}
    left = {r.id: r for r in store.runs(limit=100)}
    assert len(left) == 4
    assert going.id in left and left[going.id].status == "running"
    assert lonely.id in left  # the only run of its task: doctor's last run
    assert sum(r.task_id == "quick" and r.status == "completed" for r in left.values()) == 2
    assert "lonely" in store.slot_states()
    assert prune_json(root)["stores"][0]["deleted"] == {"runs": 0}


# --- the backend store, while the daemon runs --------------------------------------------------


def post_event(url: str, event: dict[str, Any]) -> dict[str, Any]:
    status, reply = wire.http("POST", url + "/events", json.dumps(event).encode())
    assert status < 400, reply
    assert isinstance(reply, dict)
    return reply


def get_json(url: str) -> tuple[int, Any]:
    return wire.http("GET", url)


def wait_status(http: str, run_id: str, statuses: tuple[str, ...]) -> None:
    def reached() -> bool:
        _, body = get_json(f"{http}/runs/{run_id}")
        return bool(body) and body.get("run", body)["status"] in statuses

    wait_until(reached, f"run {run_id} to reach {statuses}")


@pytest.fixture
def daemon(root: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A ``workspace backend --port 0`` on a data dir outside the root: (HTTP URL, data dir)."""
    backend = Backend(write_flows(root), tmp_path / "backend-data").start()
    try:
        yield backend.http, backend.data_dir
    finally:
        assert backend.stop() == 0, backend.stderr()


def test_backend_prunes_old_finished_events_while_the_daemon_runs(
    root: Path, daemon: tuple[str, Path]
) -> None:
    http, data = daemon
    ids = {name: f"prune-{name}-{os.getpid()}" for name in ("old", "recent", "nomatch", "asleep")}
    old = post_event(http, {"id": ids["old"], "type": "demo.event", "receivedAt": OLD_ISO})
    recent = post_event(http, {"id": ids["recent"], "type": "demo.event"})
    post_event(http, {"id": ids["nomatch"], "type": "nobody.listens", "receivedAt": OLD_ISO})
    asleep = post_event(http, {"id": ids["asleep"], "type": "sleep.event", "receivedAt": OLD_ISO})
    for reply in (old, recent):
        wait_status(http, reply["runIds"][0], ("completed",))
    wait_status(http, asleep["runIds"][0], ("running",))
    with sqlite3.connect(data / "backend.sqlite") as db:  # the old event's run ended long ago
        db.execute(
            "UPDATE runs SET created_at = ?, started_at = ?, completed_at = ? WHERE event_id = ?",
            (OLD_ISO, OLD_ISO, OLD_ISO, ids["old"]),
        )
    args = ("--data-dir", str(data))

    # --vacuum needs the daemon stopped; pruning does not.
    code, out, err = prune(root, "--vacuum", *args)
    assert code == 1 and out == ""
    assert err.startswith("error: --vacuum: a backend is running on") and err.count("\n") == 1
    # The daemon holds its data dir itself: deleting backend.lock does not fool prune.
    (data / "backend.lock").unlink()
    code, out, err = prune(root, "--vacuum", *args)
    assert code == 1 and err.startswith("error: --vacuum: a backend is running on"), err

    dry = store_entry(prune_json(root, "--dry-run", *args), "backend")
    assert dry["status"] == "dry-run" and dry["deleted"] == {"events": 2, "runs": 1}

    # A writer holding the lock: one line, exit 1, nothing deleted.
    blocker = sqlite3.connect(data / "backend.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        code, out, err = prune(root, "--busy-timeout", "0.2", *args)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert code == 1, err
    assert err.count("\n") == 1 and "backend store" in err and "locked" in err
    assert "backend.sqlite: not pruned" in out
    assert store_entry(prune_json(root, "--dry-run", *args), "backend")["deleted"] == dry["deleted"]

    done = store_entry(prune_json(root, *args), "backend")
    assert done["status"] == "pruned" and done["deleted"] == {"events": 2, "runs": 1}
    assert get_json(f"{http}/events/{ids['old']}")[0] == 404
    assert get_json(f"{http}/events/{ids['nomatch']}")[0] == 404
    assert get_json(f"{http}/runs/{old['runIds'][0]}")[0] == 404
    assert get_json(f"{http}/events/{ids['recent']}")[0] == 200
    assert get_json(f"{http}/events/{ids['asleep']}")[0] == 200
    _, body = get_json(f"{http}/runs/{asleep['runIds'][0]}")
    assert body.get("run", body)["status"] == "running"
    assert get_json(f"{http}/readyz")[0] == 200
    # The documented consequence: the pruned id is new to the backend again.
    again = post_event(http, {"id": ids["old"], "type": "demo.event"})
    assert again["status"] == "accepted" and again["runIds"] != old["runIds"]
    duplicate = post_event(http, {"id": ids["recent"], "type": "demo.event"})
    assert duplicate["status"] == "duplicate"


# --- the service path's records ----------------------------------------------------------------


TABLES = ("attempts", "seen_entries", "source_cursors", "flow_events", "dispatches")


def release(source_id: str, tag: str) -> SeenRelease:
    event = {"id": f"patch:{source_id}:{tag}:upstream.release", "type": "upstream.release"}
    return SeenRelease(tag=tag, sha=None, url=None, published_at=None, event=event)


def test_records_keep_attempts_seen_entries_cursors_and_the_events_they_deliver(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = root.parent / "records-data"
    monkeypatch.setenv("DATA_DIR", str(data))
    records = Records.for_workspace(root).open()
    tags = ("v1", "v2", "v3")
    polled = records.record_poll(
        "upstream",
        [release("upstream", t) for t in tags],
        prime_only=False,
        repo="o/r",
        now=OLD,
        next_poll_at=OLD_ISO,
    )
    # A second source sees the same releases: linked, its events delivered by nobody.
    records.record_poll(
        "mirror",
        [release("mirror", t) for t in tags],
        prime_only=False,
        repo="o/r",
        now=OLD,
        next_poll_at=OLD_ISO,
    )
    finished, started, undelivered = polled.claimed
    now = dt.datetime.now(dt.UTC)
    for attempt in polled.claimed:
        records.log_dispatch(attempt, "flow.dispatch", "accepted", OLD)
    records.log_dispatch(finished, "flow.replay", "accepted", now)  # recent: kept
    records.finish(
        finished.id, "changed", OLD, run_ids=[], run_statuses={}, candidate_refs=[], message=None
    )
    records.mark_started(started.id, ["run_x"], OLD)
    records.mark_undelivered(undelivered.id, "backend down", OLD, OLD_ISO)

    def counts() -> dict[str, int]:
        with records.connect(write=False) as db:
            return {
                table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES
            }

    before = counts()
    assert before == {
        "attempts": 3,
        "seen_entries": 6,
        "source_cursors": 2,
        "flow_events": 6,
        "dispatches": 4,
    }
    dry = store_entry(prune_json(root, "--dry-run"), "records")
    assert dry["deleted"] == {"dispatches": 1, "events": 3}
    assert counts() == before

    done = store_entry(prune_json(root), "records")
    assert done["status"] == "pruned" and done["deleted"] == {"dispatches": 1, "events": 3}
    assert counts() == {**before, "flow_events": 3, "dispatches": 3}
    for attempt in polled.claimed:
        assert records.event(attempt.event_id) is not None  # `attempts retry` still works
    assert [d["method"] for d in records.dispatches(finished.id)] == ["flow.replay"]
    assert len(records.dispatches(started.id)) == len(records.dispatches(undelivered.id)) == 1
    # The same release polled again is still known: nothing new to dispatch.
    again = records.record_poll(
        "upstream",
        [release("upstream", "v1")],
        prime_only=False,
        repo="o/r",
        now=now,
        next_poll_at=iso(now),
    )
    assert again.seen == 0 and again.claimed == []
    vacuumed = store_entry(prune_json(root, "--vacuum"), "records")
    assert vacuumed["vacuumed"] is True and vacuumed["deleted"] == {"dispatches": 0, "events": 0}
    assert counts() == {**before, "flow_events": 3, "dispatches": 3}
