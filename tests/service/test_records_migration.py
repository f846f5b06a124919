"""A records store written by an older version: read as it is, migrated by the first write.

The version 1 store is built from the schema as version 1 shipped it (copied below), with real
SQLite and every table holding rows; nothing a migration finds is lost.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from workspace_adapter.base.globals import Globals
from workspace_adapter.base.sqlitefile import create_atomically
from workspace_adapter.base.times import iso
from workspace_adapter.commands import attempts
from workspace_adapter.service.records import Records
from workspace_adapter.service.schema import DB_NAME, SCHEMA_VERSION

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
STAMP = iso(NOW)
TABLES = ("source_cursors", "seen_entries", "flow_events", "attempts", "dispatches")
PATCHES = [{"name": "patch/020-fork-banner", "status": "conflict", "files": ["index.js"]}]

# The records schema of version 1, as src/workspace_adapter/service/schema.py had it.
V1_SCHEMA = """
CREATE TABLE source_cursors (
    source_id TEXT PRIMARY KEY,
    primed_at TEXT,
    last_polled_at TEXT,
    next_poll_at TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE seen_entries (
    source_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    sha TEXT,
    url TEXT,
    published_at TEXT,
    primed INTEGER NOT NULL,
    event_id TEXT,
    attempt_id TEXT,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (source_id, tag)
);
CREATE TABLE flow_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    source_id TEXT,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE attempts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    status TEXT NOT NULL,
    upstream_repo TEXT NOT NULL,
    upstream_tag TEXT NOT NULL,
    run_ids TEXT NOT NULL DEFAULT '[]',
    run_statuses TEXT NOT NULL DEFAULT '{}',
    candidate_refs TEXT NOT NULL DEFAULT '[]',
    message TEXT,
    retry_of TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    next_delivery_at TEXT,
    claimed_pid INTEGER,
    claimed_marker TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX attempts_one_dispatch_per_release
    ON attempts (upstream_repo, upstream_tag) WHERE operation = 'dispatch';
CREATE INDEX attempts_by_status ON attempts (status, next_delivery_at);
CREATE TABLE dispatches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    attempt_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    method TEXT NOT NULL,
    outcome TEXT NOT NULL,
    run_ids TEXT NOT NULL DEFAULT '[]',
    matched INTEGER,
    message TEXT,
    at TEXT NOT NULL
);
"""

T = STAMP
V1_ROWS: list[tuple[str, tuple[Any, ...]]] = [
    ("INSERT INTO source_cursors VALUES (?, ?, ?, ?, ?, ?, ?)", ("up", T, T, T, 2, "boom", T)),
    (
        "INSERT INTO seen_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("up", "v1.0.0", "abc", "https://x/v1", T, 0, "e1", "att_1", T),
    ),
    (
        "INSERT INTO flow_events VALUES (?, ?, ?, ?, ?)",
        ("e1", "upstream.release", "up", '{"id": "e1"}', T),
    ),
    (
        "INSERT INTO attempts (id, event_id, operation, status, upstream_repo, upstream_tag, "
        "run_ids, run_statuses, candidate_refs, message, deliveries, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            "att_1",
            "e1",
            "dispatch",
            "changed",
            "o/r",
            "v1.0.0",
            '["run_1"]',
            '{"run_1": "changed"}',
            '[{"ref": "refs/heads/main", "sha": "abc"}]',
            "rebased",
            1,
            T,
            T,
        ),
    ),
    (
        "INSERT INTO attempts (id, event_id, operation, status, upstream_repo, upstream_tag, "
        "retry_of, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("att_2", "e1", "retry", "undelivered", "o/r", "v1.0.0", "att_1", T, T),
    ),
    (
        "INSERT INTO dispatches (attempt_id, event_id, method, outcome, run_ids, matched, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("att_1", "e1", "flow.dispatch", "accepted", '["run_1"]', 1, T),
    ),
]


@pytest.fixture
def v1_store(tmp_path: Path) -> Path:
    """A version 1 records store under ``tmp_path/data`` with a row or two in every table."""
    path = tmp_path / "data" / DB_NAME
    create_atomically(path, tmp_path / "data" / "records.lock", V1_SCHEMA, 1)
    with sqlite3.connect(path) as db:
        for sql, values in V1_ROWS:
            db.execute(sql, values)
    return path


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in the columns version 1 had, in insertion order."""
    with sqlite3.connect(path) as db:
        found = {}
        for table in TABLES:
            columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            shown = ", ".join(c for c in columns if c != "patches")
            found[table] = db.execute(f"SELECT {shown} FROM {table} ORDER BY rowid").fetchall()
    return found


def version_and_columns(path: Path) -> tuple[int, list[tuple[Any, ...]]]:
    uri = path.resolve().as_uri() + "?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        return version, db.execute("PRAGMA table_info(attempts)").fetchall()


def test_the_first_write_migrates_a_v1_store_and_keeps_every_row(
    v1_store: Path, tmp_path: Path
) -> None:
    """Every row of a version 1 store survives the first write, which also adds the column."""
    before = dump(v1_store)
    records = Records(v1_store.parent).open()
    assert version_and_columns(v1_store)[0] == 1  # opening writes nothing

    done = records.finish(
        "att_2",
        "needs_intervention",
        NOW,
        run_ids=["run_2"],
        run_statuses={"run_2": "needs_intervention"},
        candidate_refs=[],
        message="patch/020-fork-banner conflicts",
        patches=PATCHES,
    )
    assert done.patches == PATCHES
    version, columns = version_and_columns(v1_store)
    assert version == SCHEMA_VERSION == 2
    # A migrated table is a new store's table: same columns, types, defaults, in the same order.
    fresh = Records(tmp_path / "fresh").open()
    assert columns == version_and_columns(fresh.path)[1]
    after = dump(v1_store)
    assert {t: after[t] for t in TABLES if t != "attempts"} == {
        t: before[t] for t in TABLES if t != "attempts"
    }
    assert after["attempts"][0] == before["attempts"][0]  # att_2 is the one finish changed
    old, new = records.attempt("att_1"), records.attempt("att_2")
    assert old is not None and new is not None
    assert (old.status, old.run_ids, old.candidate_refs, old.patches) == (
        "changed",
        ["run_1"],
        [{"ref": "refs/heads/main", "sha": "abc"}],
        [],
    )
    assert (new.status, new.retry_of, new.patches) == ("needs_intervention", "att_1", PATCHES)
    assert records.dispatches("att_1")[0]["runIds"] == ["run_1"]
    cursor = records.cursor("up")
    assert cursor is not None and (cursor.failures, cursor.last_error) == (2, "boom")


def test_a_write_that_fails_leaves_the_v1_store_whole_and_the_next_one_migrates(
    v1_store: Path,
) -> None:
    """The migration is part of the first write's transaction: rolled back with it."""
    records = Records(v1_store.parent).open()
    with pytest.raises(RuntimeError), records.connect() as db:
        db.execute("DELETE FROM attempts")
        raise RuntimeError("the write fails")
    assert version_and_columns(v1_store)[0] == 1
    assert [a.id for a in records.attempts()] == ["att_2", "att_1"]
    records.record_failure("up", "boom again", NOW, STAMP)
    assert version_and_columns(v1_store)[0] == SCHEMA_VERSION
    assert [a.patches for a in records.attempts()] == [[], []]


def test_attempts_and_a_dry_run_prune_read_a_v1_store_without_writing_it(
    v1_store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`workspace attempts` and `prune --dry-run` never write: a v1 store stays v1."""
    monkeypatch.setenv("DATA_DIR", str(v1_store.parent))
    g = Globals(
        workspace_root=v1_store.parent,
        backend_url="ws://127.0.0.1:9",
        mode="local",
        log_level="warning",
    )
    assert attempts.list_attempts(g, None, True) == 0
    listed = json.loads(capsys.readouterr().out)["attempts"]
    assert [(a["id"], a["patches"]) for a in listed] == [("att_2", []), ("att_1", [])]
    assert attempts.list_attempts(g, "changed", False) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("att_1  changed")
    records = Records(v1_store.parent)
    assert records.prune(iso(NOW + dt.timedelta(days=1)), dry_run=True) == {
        "dispatches": 1,
        "events": 0,
    }
    version, columns = version_and_columns(v1_store)
    assert version == 1 and "patches" not in [c[1] for c in columns]
