"""Local run state: run records and each scheduled task's last slot, in SQLite (WAL).

One class, and every access is one short transaction (pre-commit's store): ``connect()`` opens
the database, begins, and commits or rolls back. The file is created under an exclusive lock,
built in a temp file and renamed into place, so a crash never leaves half a store. Writers use
``BEGIN IMMEDIATE``, which is also what keeps two ticks from claiming the same slot.
A run left ``running`` by a process that is gone (its pid and start marker no longer match) is
marked ``failed``, reason ``interrupted``, whenever the store is opened for writing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from workspace_adapter.base import paths
from workspace_adapter.base.errors import EXIT_FAILED, UserError
from workspace_adapter.base.processes import process_alive, process_marker
from workspace_adapter.base.sqlitefile import (
    SchemaVersionError,
    check_version,
    create_atomically,
    describe_error,
    open_readonly,
    transaction,
)
from workspace_adapter.base.status import Status
from workspace_adapter.base.times import utc_now_iso
from workspace_adapter.local.taskruns import FIELDS, SlotState, TaskRun

SCHEMA_VERSION = 1
DB_NAME = "state.sqlite3"

_SCHEMA = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    exit_code INTEGER,
    stdout_tail TEXT NOT NULL DEFAULT '',
    stderr_tail TEXT NOT NULL DEFAULT '',
    event_id TEXT,
    run_ids TEXT NOT NULL DEFAULT '[]',
    slot TEXT,
    pid INTEGER,
    pid_marker TEXT
);
CREATE INDEX runs_by_task ON runs (task_id, started_at);
CREATE INDEX runs_running ON runs (task_id) WHERE status = 'running';
CREATE TABLE schedule (
    task_id TEXT PRIMARY KEY,
    last_slot TEXT NOT NULL,
    next_slot TEXT,
    schedule TEXT,
    timezone TEXT,
    updated_at TEXT NOT NULL
);
"""


_COLUMNS = ", ".join(FIELDS)
_RUN_IDS = FIELDS.index("run_ids")


ClaimOutcome = Literal["claimed", "overlap", "taken"]


def _row_to_record(row: tuple[object, ...]) -> TaskRun:
    values = list(row)
    values[_RUN_IDS] = _decode_run_ids(str(values[_RUN_IDS]))
    return TaskRun.from_values(tuple(values))


# A command task has no run ids: its run never needs the json module (an import on every start).
def _encode_run_ids(run_ids: list[str]) -> str:
    if not run_ids:
        return "[]"
    import json

    return json.dumps(run_ids, separators=(",", ":"), ensure_ascii=False)


def _decode_run_ids(text: str) -> list[str]:
    if text in ("", "[]"):
        return []
    import json

    run_ids: list[str] = json.loads(text)
    return run_ids


def _record_values(record: TaskRun) -> tuple[object, ...]:
    return (
        record.id,
        record.task_id,
        record.kind,
        record.status,
        record.reason,
        record.started_at,
        record.finished_at,
        record.exit_code,
        record.stdout_tail,
        record.stderr_tail,
        record.event_id,
        _encode_run_ids(record.run_ids),
        record.slot,
    )


class StateStore:
    """The run state of one mode: ``.workspace/<mode>/state.sqlite3``."""

    def __init__(self, directory: Path, readonly: bool = False) -> None:
        self.directory = directory
        self.path = directory / DB_NAME
        self.readonly = readonly  # doctor and `tick --dry-run`: never create or change a file
        self._pid = os.getpid()
        self._marker: str | None = None
        # One writer connection per thread, kept for the store's life: closing the last
        # connection checkpoints the WAL with an fsync, which a quick `workspace run` would
        # otherwise pay once per transaction.
        self._local = threading.local()

    @classmethod
    def for_workspace(cls, root: Path, mode: str, readonly: bool = False) -> StateStore:
        return cls(paths.state_dir(root, mode), readonly)

    def exists(self) -> bool:
        return self.path.is_file()

    def open(self) -> StateStore:
        """Create the database when missing, then recover runs whose process is gone."""
        if self.readonly:
            return self
        if not self.exists():
            try:
                self._create()
            except (sqlite3.Error, OSError) as exc:
                problem = self._unusable(exc)
                if problem is None:
                    raise
                raise problem from exc
        self.recover_interrupted()
        return self

    def _create(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        ignore = self.directory.parent / ".gitignore"
        if not ignore.exists():
            # Keeps .workspace/ out of git even when the repository forgot to ignore it.
            try:
                ignore.write_text("*\n", encoding="utf-8")
            except OSError:
                # An empty file (a full disk) would ignore nothing and never be written again.
                with contextlib.suppress(OSError):
                    ignore.unlink(missing_ok=True)
        create_atomically(self.path, self.directory / "state.lock", _SCHEMA, SCHEMA_VERSION)

    @contextlib.contextmanager
    def connect(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: ``BEGIN IMMEDIATE`` for writers, so claims are serialised."""
        db: sqlite3.Connection | None = None
        try:
            if self.readonly:
                db = open_readonly(self.path)
                db.isolation_level = None
                _check_version(db, self.path)
                write = False
            else:
                db = self._writer()
            with transaction(db, "BEGIN IMMEDIATE" if write else "BEGIN"):
                yield db
        except sqlite3.DatabaseError as exc:
            if not self.readonly:
                self.close()  # a connection that failed is not reused
            problem = self._unusable(exc)
            if problem is None:
                raise
            raise problem from exc
        finally:
            if self.readonly and db is not None:
                db.close()

    def _writer(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                _check_version(db, self.path)
            except BaseException:
                db.close()
                raise
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
        return db

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads or the process)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            db.close()

    def _unusable(self, exc: sqlite3.Error | OSError) -> UserError | None:
        """The one-line error for a state that cannot be used now, else None."""
        # Not ours to repair or delete: the operator decides what happens to the history.
        problem = describe_error(exc, "state store", self.path)
        return None if problem is None else UserError(problem, EXIT_FAILED)

    @property
    def marker(self) -> str:
        if self._marker is None:
            self._marker = process_marker(self._pid)
        return self._marker

    def recover_interrupted(self) -> list[str]:
        """Mark runs left ``running`` by dead processes as failed; returns their ids."""
        now = utc_now_iso()
        with self.connect() as db:
            rows = db.execute(
                "SELECT id, pid, pid_marker FROM runs WHERE status = 'running'"
            ).fetchall()
            dead = [row[0] for row in rows if not process_alive(row[1], row[2])]
            db.executemany(
                "UPDATE runs SET status = 'failed', reason = 'interrupted', finished_at = ? "
                "WHERE id = ?",
                [(now, run_id) for run_id in dead],
            )
        return dead

    def _insert(self, db: sqlite3.Connection, record: TaskRun) -> None:
        alive = record.status == Status.RUNNING
        db.execute(
            f"INSERT INTO runs ({_COLUMNS}, pid, pid_marker) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*_record_values(record), self._pid if alive else None, self.marker if alive else None),
        )

    def insert(self, record: TaskRun) -> None:
        with self.connect() as db:
            self._insert(db, record)

    def finish(self, record: TaskRun) -> None:
        """Store a run's final fields; the pid no longer matters once it has ended."""
        with self.connect() as db:
            db.execute(
                "UPDATE runs SET status = ?, reason = ?, finished_at = ?, exit_code = ?, "
                "stdout_tail = ?, stderr_tail = ?, event_id = ?, run_ids = ?, pid = NULL, "
                "pid_marker = NULL WHERE id = ?",
                (
                    record.status,
                    record.reason,
                    record.finished_at,
                    record.exit_code,
                    record.stdout_tail,
                    record.stderr_tail,
                    record.event_id,
                    _encode_run_ids(record.run_ids),
                    record.id,
                ),
            )

    def record_dispatch(self, record: TaskRun) -> None:
        """Store a running flow task's event id and run ids as soon as they are known.

        Only those two columns: the row stays ``running`` with its pid, so should the command
        die while it follows the runs, the record the next command marks ``interrupted`` still
        names the event and the runs that went on.
        """
        with self.connect() as db:
            db.execute(
                "UPDATE runs SET event_id = ?, run_ids = ? WHERE id = ?",
                (record.event_id, _encode_run_ids(record.run_ids), record.id),
            )

    def runs(self, task_id: str | None = None, limit: int = 20) -> list[TaskRun]:
        """The newest runs first, of one task or of all."""
        where, args = ("WHERE task_id = ?", (task_id,)) if task_id else ("", ())
        limit = min(limit, 2**63 - 1)  # SQLite's largest integer; a larger --limit means "all"
        with self.connect(write=False) as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM runs {where} ORDER BY started_at DESC, id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [_row_to_record(row) for row in rows]

    def slot_states(self) -> dict[str, SlotState]:
        with self.connect(write=False) as db:
            rows = db.execute(
                "SELECT task_id, last_slot, next_slot, schedule, timezone FROM schedule"
            ).fetchall()
        return {
            r[0]: SlotState(last_slot=r[1], next_slot=r[2], schedule=r[3], timezone=r[4])
            for r in rows
        }

    def cache_next_slots(self, updates: list[tuple[str, SlotState]]) -> None:
        """Store freshly computed next slots, unless a tick moved the last slot meanwhile."""
        if not updates:
            return
        with self.connect() as db:
            db.executemany(
                "UPDATE schedule SET next_slot = ?, schedule = ?, timezone = ? "
                "WHERE task_id = ? AND last_slot = ?",
                [(s.next_slot, s.schedule, s.timezone, t, s.last_slot) for t, s in updates],
            )

    def running_tasks(self) -> set[str]:
        """Tasks with a run whose process is still alive."""
        with self.connect(write=False) as db:
            rows = db.execute(
                "SELECT task_id, pid, pid_marker FROM runs WHERE status = 'running'"
            ).fetchall()
        return {row[0] for row in rows if process_alive(row[1], row[2])}

    def record_baselines(self, baselines: list[tuple[str, SlotState]]) -> set[str]:
        """Remember new tasks' starting points in one transaction; the ids that were new.

        A task missing from the result already had a slot (another tick got there first).
        """
        if not baselines:
            return set()
        now = utc_now_iso()
        recorded: set[str] = set()
        with self.connect() as db:
            for task_id, slot in baselines:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO schedule "
                    "(task_id, last_slot, next_slot, schedule, timezone, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (task_id, slot.last_slot, slot.next_slot, slot.schedule, slot.timezone, now),
                )
                if cursor.rowcount == 1:
                    recorded.add(task_id)
        return recorded

    def claim(self, record: TaskRun, expected_last: str | None, slot: SlotState) -> ClaimOutcome:
        """Move the task's last slot to ``record.slot`` and store ``record``, atomically.

        ``slot`` is the task's new slot state (its ``last_slot`` is ``record.slot``). ``taken``
        when the last slot is no longer ``expected_last`` (another tick got there first:
        nothing is stored). ``overlap`` when a run of the task is still going: the slot is
        consumed and ``record`` is stored as ``skipped``, reason ``overlap``.
        """
        assert record.slot is not None and record.slot == slot.last_slot
        now = utc_now_iso()
        with self.connect() as db:
            row = db.execute(
                "SELECT last_slot FROM schedule WHERE task_id = ?", (record.task_id,)
            ).fetchone()
            if (row[0] if row else None) != expected_last:
                return "taken"
            running = db.execute(
                "SELECT pid, pid_marker FROM runs WHERE task_id = ? AND status = 'running'",
                (record.task_id,),
            ).fetchall()
            outcome: ClaimOutcome = "claimed"
            if record.status == Status.RUNNING and any(process_alive(p, m) for p, m in running):
                record.status, record.reason, record.finished_at = Status.SKIPPED, "overlap", now
                outcome = "overlap"
            db.execute(
                "INSERT INTO schedule "
                "(task_id, last_slot, next_slot, schedule, timezone, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO UPDATE SET "
                "last_slot = excluded.last_slot, next_slot = excluded.next_slot, "
                "schedule = excluded.schedule, timezone = excluded.timezone, "
                "updated_at = excluded.updated_at",
                (record.task_id, slot.last_slot, slot.next_slot, slot.schedule, slot.timezone, now),
            )
            self._insert(db, record)
        return outcome

    def prune(self, cutoff: str, *, dry_run: bool = False, busy_timeout: float = 5.0) -> int:
        """Delete finished runs started before ``cutoff``; the number deleted (or that would be).

        Kept whatever their age: ``running`` runs, each task's newest run and newest finished
        run (doctor's "last run", `workspace runs`), and the ``schedule`` table (tick's last
        slots). One ``BEGIN IMMEDIATE`` transaction that waits ``busy_timeout`` seconds for the
        write lock; never creates the file. ``dry_run`` only counts, read-only.
        """
        prunable = (
            "FROM runs WHERE status != 'running' "
            "AND COALESCE(julianday(started_at) < julianday(?), 0) "
            "AND id NOT IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY task_id "
            "ORDER BY started_at DESC, id DESC) AS newest, ROW_NUMBER() OVER (PARTITION BY "
            "task_id, status = 'running' ORDER BY started_at DESC, id DESC) AS newest_of_kind "
            "FROM runs) WHERE newest = 1 OR newest_of_kind = 1)"
        )
        if dry_run:
            db = open_readonly(self.path)
        else:
            uri = self.path.resolve().as_uri() + "?mode=rw"
            db = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            db.isolation_level = None
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            with transaction(db, "BEGIN" if dry_run else "BEGIN IMMEDIATE"):
                _check_version(db, self.path)
                if dry_run:
                    count: int = db.execute(f"SELECT count(*) {prunable}", (cutoff,)).fetchone()[0]
                else:
                    count = db.execute(f"DELETE {prunable}", (cutoff,)).rowcount
        finally:
            db.close()
        return count


def _check_version(db: sqlite3.Connection, path: Path) -> None:
    """A state file of another schema version is the operator's to move aside or upgrade for:
    never read with the wrong columns, never written into."""
    try:
        # 0: no schema at all, which the first query reports as not a state store.
        check_version(db, path, "state store", SCHEMA_VERSION, empty_ok=True)
    except SchemaVersionError as exc:
        raise UserError(str(exc)) from None
