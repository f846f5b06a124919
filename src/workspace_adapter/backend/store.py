"""The backend's SQLite store: events and the runs they started.

WAL with ``synchronous=NORMAL``: a committed dispatch survives a crash of the backend. The
daemon never writes on its event loop: another process may hold the database locked for
seconds, and ``BEGIN IMMEDIATE`` waits that out. Its writes go through :class:`StoreWriter`
(:mod:`~workspace_adapter.backend.groupcommit`), which group-commits them on one dedicated thread (a
write that fails does not sink the others) and answers each caller only once its transaction
committed. What each write does is in :mod:`~workspace_adapter.backend.mutations`; the records it
stores are in :mod:`~workspace_adapter.backend.records`.
Point reads use a read-only connection on the loop (WAL readers never wait for the writer);
list queries, which can touch a thousand rows, use another one on a worker thread.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

from workspace_adapter.backend import mutations
from workspace_adapter.backend.groupcommit import (
    QueuedWrite,
    StoreWriter,
)
from workspace_adapter.backend.mutations import WriteOp
from workspace_adapter.backend.records import (
    RUN_COLUMNS,
    DispatchRecord,
    FlowRun,
    json_decoder,
    run_from_row,
)
from workspace_adapter.base.sqlitefile import (
    check_version,
    classify,
    rollback_if_open,
    transaction,
)
from workspace_adapter.base.status import TERMINAL_RUN_STATES

# Importable from here as before the store was split in three.

SCHEMA_VERSION = 1
DB_NAME = "backend.sqlite"

_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    received_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_by_type ON events (type, seq);
CREATE TABLE runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    flow_name TEXT NOT NULL,
    step_name TEXT NOT NULL,
    replay INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    result_status TEXT,
    result TEXT,
    error TEXT,
    exit_code INTEGER,
    stdout_tail TEXT NOT NULL DEFAULT '',
    stderr_tail TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT
);
CREATE INDEX runs_by_event ON runs (event_id, seq);
CREATE INDEX runs_by_status ON runs (status, seq);
"""


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class BackendStore:
    """Events and runs in ``<data dir>/backend.sqlite``; one writer, two reader connections.

    The synchronous write methods run one transaction each on the caller's thread (start-up,
    tests, tools); the daemon writes through :attr:`writer` instead.
    """

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_NAME
        self._db = _connect(self.path)
        self._migrate()
        self._point_reader = _connect(self.path, readonly=True)
        self._reader = _connect(self.path, readonly=True)
        # The loop's own writer: it never waits for the lock (busy_timeout 0), see commit_now.
        self._now_db = _connect(self.path)
        self._now_db.execute("PRAGMA busy_timeout = 0")
        # The list reader is used from worker threads, one at a time.
        self._reader_lock = threading.Lock()
        self.writer = StoreWriter(self)

    def close(self) -> None:
        self.writer.stop()
        self._reader.close()
        self._point_reader.close()
        self._now_db.close()
        self._db.close()

    def _migrate(self) -> None:
        # Built in place in one transaction, not by create_atomically: all or nothing as well,
        # and a file a failed first start left empty is completed (base/sqlitefile.py says why).
        def migrate(db: sqlite3.Connection) -> None:
            # Checked again under the write lock: another process may have created it first.
            version = check_version(db, self.path, "backend store", SCHEMA_VERSION, empty_ok=True)
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        self.transaction(migrate)

    # --- writes ------------------------------------------------------------------------------

    def transaction(self, op: WriteOp) -> Any:
        """Run ``op`` on the writer connection in one ``BEGIN IMMEDIATE`` transaction."""
        with transaction(self._db):
            return op(self._db)

    def limit_pages(self, pages: int | None) -> None:
        """Refuse to grow the file past ``pages`` pages (None: no limit), on every writer.

        A write that would need more fails with SQLITE_FULL and stores nothing, exactly as on a
        full disk: an operator's cap on the store's size, and the fault tests' full disk.
        """
        limit = 1_073_741_823 if pages is None else pages
        for db in (self._db, self._now_db):
            db.execute(f"PRAGMA max_page_count = {int(limit)}")

    def page_count(self) -> int:
        """How many pages the file holds now."""
        return int(self._db.execute("PRAGMA page_count").fetchone()[0])

    def commit_now(self, op: WriteOp) -> tuple[bool, Any]:
        """Commit ``op`` at once when the write lock is free, never waiting for it.

        ``(True, result)`` once committed; ``(False, None)`` when another writer holds the lock
        (another process, or the writer thread mid-batch): the caller queues the write then.
        A short transaction on the caller's thread, so an idle daemon answers a dispatch without
        a thread hand-off; any other error is raised, nothing of ``op`` stored.
        """
        # Written out rather than through ``transaction``: this is the daemon's hottest path (a
        # context manager costs frames on every dispatch), and only a busy BEGIN means "queue it".
        db = self._now_db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if classify(exc) == "busy":
                return False, None
            raise
        try:
            result = op(db)
            db.execute("COMMIT")
        except BaseException:
            rollback_if_open(db)
            raise
        return True, result

    def commit_batch(self, batch: list[QueuedWrite]) -> None:
        """Commit ``batch`` in one transaction and give each write its answer (worker thread).

        When any write fails, the whole transaction is rolled back (SQLITE_FULL does that by
        itself) and every write is tried again in a transaction of its own, so one bad write
        sinks nothing else and each gets its own answer. Errors are rare, so this is cheaper
        than a savepoint around every write.
        """
        db = self._db
        if len(batch) > 1:
            # BEGIN by hand: its failure answers every write, while a failed write retries each.
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:  # locked: trying each alone would only wait longer
                for write in batch:
                    write.error = exc
                return
            try:
                results = [write.op(db) for write in batch]
                db.execute("COMMIT")
            except Exception:
                rollback_if_open(db)
            else:
                for write, result in zip(batch, results, strict=True):
                    write.result = result
                return
        for write in batch:
            try:
                write.result = self.transaction(write.op)
            except Exception as exc:
                write.error = exc

    def dispatch(self, event: dict[str, Any], runs: list[FlowRun]) -> DispatchRecord:
        """Store ``event`` and its ``runs`` in one transaction, or report the first dispatch."""
        record: DispatchRecord = self.transaction(lambda db: mutations.store_event(db, event, runs))
        return record

    def add_runs(self, runs: list[FlowRun]) -> None:
        """Store replay runs of an event already stored."""
        self.transaction(lambda db: mutations.insert_runs(db, runs))

    def mark_running(self, run_id: str) -> FlowRun | None:
        """Queued → running; None when the run was not queued (canceled meanwhile)."""
        run: FlowRun | None = self.transaction(lambda db: mutations.mark_running(db, run_id))
        return run

    def finish_run(self, run_id: str, **fields: Any) -> FlowRun | None:
        """Record a run's end; None when it had already ended (the first end wins).

        ``fields``: ``status`` and optionally ``result_status, result, error, exit_code,
        stdout_tail, stderr_tail, only_from`` (the statuses it may end from).
        """
        run: FlowRun | None = self.transaction(
            lambda db: mutations.finish_run(db, run_id, **fields)
        )
        return run

    def recover(self) -> tuple[list[FlowRun], list[FlowRun]]:
        """After a restart: fail the runs left ``running``; return them and the ``queued`` ones."""
        found: tuple[list[FlowRun], list[FlowRun]] = self.transaction(mutations.recover)
        return found

    # --- maintenance: another process, the daemon may be running ----------------------------

    @staticmethod
    def prune(
        data_dir: Path, cutoff: str, *, dry_run: bool = False, busy_timeout: float = 5.0
    ) -> dict[str, int]:
        """Delete old, finished events with their runs; ``{"events": n, "runs": n}`` deleted.

        An event goes when it was received before ``cutoff`` and every run it has (replays
        included) is terminal and ended before ``cutoff``; an event whose ``receivedAt`` is not
        a time is kept, its age unknown. Queued and running runs, and their events, stay. Safe
        while the daemon runs: one ``BEGIN IMMEDIATE`` transaction on a connection of its own,
        which waits ``busy_timeout`` seconds for the daemon's write lock and else raises (SQLite
        busy) having deleted nothing. Never creates the file; ``dry_run`` only counts. A pruned
        event id is new to the daemon again: dispatching it once more starts new runs.
        """
        from workspace_adapter.base.sqlitefile import open_readonly

        path = data_dir / DB_NAME
        old = "COALESCE(julianday({}) < julianday(:cut), 0)"  # an unreadable time is not old
        terminal = {f"terminal{i}": state for i, state in enumerate(sorted(TERMINAL_RUN_STATES))}
        events = (
            f"SELECT e.id FROM events e WHERE {old.format('e.received_at')} AND NOT EXISTS ("
            "SELECT 1 FROM runs r WHERE r.event_id = e.id AND (r.status NOT IN "
            f"({', '.join(f':{name}' for name in terminal)}) "
            f"OR NOT {old.format('COALESCE(r.completed_at, r.created_at)')}))"
        )
        # Runs first: which events go depends on the runs they still have, not the reverse.
        statements = {
            "runs": f"FROM runs WHERE event_id IN ({events})",
            "events": f"FROM events WHERE id IN ({events})",
        }
        uri = f"{path.resolve().as_uri()}?mode=rw"
        db = open_readonly(path) if dry_run else sqlite3.connect(uri, uri=True)
        try:
            db.isolation_level = None
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            with transaction(db, "BEGIN" if dry_run else "BEGIN IMMEDIATE"):
                check_version(db, path, "backend store", SCHEMA_VERSION)
                verb = "SELECT count(*)" if dry_run else "DELETE"
                found: dict[str, int] = {}
                for name, rows in statements.items():
                    cursor = db.execute(f"{verb} {rows}", {"cut": cutoff, **terminal})
                    found[name] = cursor.fetchone()[0] if dry_run else cursor.rowcount
        finally:
            db.close()
        return {"events": found["events"], "runs": found["runs"]}

    # --- point reads: indexed, committed data only, on the loop ------------------------------

    def get_run(self, run_id: str) -> FlowRun | None:
        row = self._point_reader.execute(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        return None if row is None else run_from_row(row)

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        row = self._point_reader.execute(
            "SELECT body FROM events WHERE id = ?", (event_id,)
        ).fetchone()
        return None if row is None else dict(json_decoder.decode(row[0]))

    def runs_of_event(self, event_id: str) -> list[FlowRun]:
        return [
            run_from_row(r)
            for r in self._point_reader.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE event_id = ? ORDER BY seq", (event_id,)
            )
        ]

    # --- list reads: call from a worker thread -----------------------------------------------

    def events_newest_first(
        self, event_type: str | None, before: int | None = None
    ) -> Generator[tuple[int, dict[str, Any]], None, None]:
        """``(seq, stored body)`` of the events (of ``event_type``), newest first, from just
        before the event numbered ``before``; read from SQLite one row at a time.

        Holds the list reader until exhausted or closed: close it (``contextlib.closing``)
        on the thread that started it.
        """
        where: dict[str, Any] = {"type = ?": event_type, "seq < ?": before}
        with contextlib.closing(self._newest_first("seq, body FROM events", where)) as rows:
            for seq, body in rows:
                yield seq, dict(json_decoder.decode(body))

    def runs_newest_first(
        self, event_id: str | None, status: str | None, before: int | None = None
    ) -> Generator[tuple[int, FlowRun], None, None]:
        """``(seq, run)`` of the runs matching the filters, as :meth:`events_newest_first`."""
        where: dict[str, Any] = {"event_id = ?": event_id, "status = ?": status, "seq < ?": before}
        with contextlib.closing(self._newest_first(f"seq, {RUN_COLUMNS} FROM runs", where)) as rows:
            for row in rows:
                yield row[0], run_from_row(row[1:])

    def _newest_first(
        self, select: str, where: dict[str, Any]
    ) -> Generator[tuple[Any, ...], None, None]:
        """The rows of ``SELECT select`` under the clauses of ``where`` whose value is not None,
        by ``seq`` descending."""
        clauses = [clause for clause, value in where.items() if value is not None]
        args = [value for value in where.values() if value is not None]
        sql = f"SELECT {select}{' WHERE ' if clauses else ''}{' AND '.join(clauses)}"
        with self._reader_lock:
            rows = self._reader.execute(f"{sql} ORDER BY seq DESC", args)
            try:
                yield from rows
            finally:
                rows.close()

    def list_events(self, event_type: str | None, limit: int) -> list[dict[str, Any]]:
        with contextlib.closing(self.events_newest_first(event_type)) as found:
            return [body for _, body in itertools.islice(found, limit)]

    def list_runs(self, event_id: str | None, status: str | None, limit: int) -> list[FlowRun]:
        with contextlib.closing(self.runs_newest_first(event_id, status)) as found:
            return [run for _, run in itertools.islice(found, limit)]
