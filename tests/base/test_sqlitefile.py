"""base/sqlitefile.py: one wording for busy, full and unreadable; one rollback rule."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from workspace_adapter.base.sqlitefile import (
    describe,
    rollback_if_open,
    transaction,
    unavailable,
)


def sqlite_error(code: int, name: str) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(name.lower())
    exc.sqlite_errorcode = code
    exc.sqlite_errorname = name
    return exc


BUSY = sqlite_error(sqlite3.SQLITE_BUSY, "SQLITE_BUSY")
FULL = sqlite_error(sqlite3.SQLITE_FULL, "SQLITE_FULL")


def test_the_daemons_short_lines_name_no_file() -> None:
    busy, full = unavailable(BUSY), unavailable(FULL)
    assert busy is not None and full is not None
    assert (busy.reason, busy.message) == ("busy", "store busy (locked by another process); retry")
    assert (full.reason, full.message) == ("full", "store is full (SQLITE_FULL): free disk space")
    assert unavailable(sqlite_error(sqlite3.SQLITE_NOTADB, "SQLITE_NOTADB")) is None
    assert unavailable(sqlite3.OperationalError("no such column: x")) is None


def test_a_commands_lines_name_the_file_and_what_it_left_undone() -> None:
    path = Path("/w/backend.sqlite")
    assert describe("busy", "state store", path, BUSY) == (
        "state store /w/backend.sqlite is locked by another process; retry"
    )
    assert describe("busy", "backend store", path, BUSY, undone="nothing deleted") == (
        "backend store /w/backend.sqlite is locked by another process; nothing deleted, retry"
    )
    assert describe("full", "records store", path, FULL) == (
        "records store /w/backend.sqlite: the disk is full (SQLITE_FULL); free disk space and retry"
    )
    assert describe("full", "state store", path, OSError(28, "No space left on device")) == (
        "state store /w/backend.sqlite: the disk is full (No space left on device); "
        "free disk space and retry"
    )
    notadb = sqlite_error(sqlite3.SQLITE_NOTADB, "SQLITE_NOTADB")
    assert describe("unreadable", "state store", path, notadb) == (
        "state store /w/backend.sqlite is not a readable state store (sqlite_notadb); "
        "move it aside to start a new history"
    )


def test_a_rollback_sqlite_already_did_is_not_repeated(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.sqlite", isolation_level=None)
    db.execute("CREATE TABLE t (x TEXT)")
    db.execute("PRAGMA max_page_count = 2")
    db.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as caught:
        db.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    assert caught.value.sqlite_errorname == "SQLITE_FULL"
    rollback_if_open(db)  # SQLite rolled back already: nothing to do, no error
    assert not db.in_transaction
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES ('y')")
    rollback_if_open(db)
    assert not db.in_transaction
    with pytest.raises(sqlite3.OperationalError), transaction(db):
        db.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    db.close()
