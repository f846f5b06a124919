"""The DATA_DIR records: real SQLite, real processes for the claims."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from workspace_adapter.base.errors import UserError
from workspace_adapter.base.processes import process_marker
from workspace_adapter.base.times import iso
from workspace_adapter.service.delivery import redelivery_delay
from workspace_adapter.service.records import Records
from workspace_adapter.service.schema import SCHEMA_VERSION, PollOutcome, SeenRelease, data_dir
from workspace_adapter.service.watcher import source_retry_delay

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
LATER = iso(NOW + dt.timedelta(minutes=5))
REPO = "o/r"


def seen(source_id: str, *tags: str) -> list[SeenRelease]:
    return [
        SeenRelease(
            tag=tag,
            sha=None,
            url=None,
            published_at=None,
            event={"id": f"patch:{source_id}:{tag}:upstream.release", "type": "upstream.release"},
        )
        for tag in tags
    ]


def record(records: Records, source_id: str, *tags: str, prime_only: bool = True) -> PollOutcome:
    return records.record_poll(
        source_id,
        seen(source_id, *tags),
        prime_only=prime_only,
        repo=REPO,
        now=NOW,
        next_poll_at=LATER,
    )


@pytest.fixture
def records(tmp_path: Path) -> Records:
    return Records(tmp_path / "data").open()


def test_the_store_is_wal_and_versioned(records: Records) -> None:
    db = sqlite3.connect(records.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(UserError, match="schema version 7"):
        Records(records.directory).open()


def test_data_dir_defaults_under_the_root_and_follows_the_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)
    assert data_dir(tmp_path) == tmp_path / ".workspace" / "data"
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "elsewhere"))
    assert data_dir(tmp_path) == tmp_path / "elsewhere"


def test_the_first_poll_primes_and_later_polls_open_one_attempt_per_new_release(
    records: Records,
) -> None:
    first = record(records, "up", "v1", "v2")
    assert first.primed and first.seen == 2 and first.claimed == []
    assert records.attempts() == []
    again = record(records, "up", "v1", "v2", "v3")
    assert not again.primed
    assert [a.upstream_tag for a in again.claimed] == ["v3"]
    attempt = again.claimed[0]
    assert (attempt.operation, attempt.status, attempt.event_id) == (
        "dispatch",
        "undelivered",
        "patch:up:v3:upstream.release",
    )
    assert records.event(attempt.event_id) == {
        "id": "patch:up:v3:upstream.release",
        "type": "upstream.release",
    }
    cursor = records.cursor("up")
    assert cursor is not None and cursor.next_poll_at == LATER and cursor.failures == 0
    assert record(records, "up", "v1", "v2", "v3").claimed == []


def test_without_prime_only_the_first_poll_opens_attempts_oldest_first(records: Records) -> None:
    outcome = record(records, "up", "v1", "v2", prime_only=False)
    assert outcome.primed
    assert [a.upstream_tag for a in outcome.claimed] == ["v1", "v2"]
    assert [a.upstream_tag for a in records.attempts()] == ["v2", "v1"]  # newest first


def test_a_release_seen_by_two_sources_is_one_attempt(records: Records) -> None:
    record(records, "a")
    record(records, "b")
    claimed = record(records, "a", "v9").claimed
    linked = record(records, "b", "v9")
    assert linked.claimed == []
    assert linked.linked == [("v9", claimed[0].id)]
    assert len(records.attempts()) == 1
    # Both events are kept; only the first is dispatched.
    assert records.event("patch:b:v9:upstream.release") is not None


def test_two_writers_at_once_record_one_attempt(tmp_path: Path) -> None:
    Records(tmp_path / "data").open()
    record(Records(tmp_path / "data"), "up", "v1")
    results: list[int] = []
    barrier = threading.Barrier(4)

    def poll() -> None:
        mine = Records(tmp_path / "data").open()
        barrier.wait()
        results.append(len(record(mine, "up", "v1", "v2").claimed))

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0, 0, 0, 1]
    assert len(Records(tmp_path / "data").attempts()) == 1


def test_claims_of_live_processes_hold_and_those_of_dead_ones_do_not(records: Records) -> None:
    record(records, "up")
    attempt = record(records, "up", "v1").claimed[0]
    # Ours while we deliver it: not claimed a second time by this process.
    assert records.claim("undelivered", NOW) == []
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with records.connect() as db:
            db.execute(
                "UPDATE attempts SET claimed_pid = ?, claimed_marker = ?",
                (live.pid, process_marker(live.pid)),
            )
        assert records.claim("undelivered", NOW) == []
    finally:
        live.kill()
        live.wait()
    assert [a.id for a in records.claim("undelivered", NOW)] == [attempt.id]


def test_an_undelivered_attempt_waits_for_its_next_delivery_time(records: Records) -> None:
    record(records, "up")
    attempt = record(records, "up", "v1").claimed[0]
    retry_at = iso(NOW + dt.timedelta(seconds=4))
    back = records.mark_undelivered(attempt.id, "backend not reachable", NOW, retry_at)
    assert (back.status, back.message, back.deliveries, back.next_delivery_at) == (
        "undelivered",
        "backend not reachable",
        1,
        retry_at,
    )
    assert records.next_delivery() == retry_at
    assert records.claim("undelivered", NOW) == []
    assert [a.id for a in records.claim("undelivered", NOW + dt.timedelta(seconds=5))] == [
        attempt.id
    ]


def test_a_failing_source_counts_its_failures_and_keeps_its_cursor(records: Records) -> None:
    record(records, "up", "v1")
    assert records.record_failure("up", "boom", NOW, LATER) == 1
    assert records.record_failure("up", "boom again", NOW, LATER) == 2
    cursor = records.cursor("up")
    assert cursor is not None
    assert (cursor.failures, cursor.last_error, cursor.primed_at is not None) == (
        2,
        "boom again",
        True,
    )
    record(records, "up", "v1")
    assert records.cursor("up").failures == 0  # type: ignore[union-attr]


def test_backoffs_double_and_are_capped() -> None:
    assert [redelivery_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert redelivery_delay(1000) == 600.0
    assert [source_retry_delay(300, n) for n in (1, 2, 3, 9)] == [300, 600, 1200, 3600]
    assert source_retry_delay(7200, 5) == 7200
