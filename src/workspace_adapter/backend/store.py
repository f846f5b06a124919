"""The backend's SQLite store: events and the runs they started (SPEC §6).

WAL with ``synchronous=NORMAL``: a committed dispatch survives a crash of the backend. The
daemon never writes on its event loop: another process may hold the database locked for
seconds, and ``BEGIN IMMEDIATE`` waits that out. Its writes go through :class:`StoreWriter`,
which group-commits them on one dedicated thread (a write that fails does not sink the others)
and answers each caller only once its transaction committed.
Point reads use a read-only connection on the loop (WAL readers never wait for the writer);
list queries, which can touch a thousand rows, use another one on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import secrets
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec

from workspace_adapter.events import utc_now_iso
from workspace_adapter.protocol import TERMINAL_STATUSES

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

_RUN_COLUMNS = (
    "id, event_id, flow_name, step_name, replay, status, result_status, result, error, "
    "exit_code, stdout_tail, stderr_tail, created_at, started_at, completed_at"
)

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


# Writes committed together at most; bounds how long one transaction holds the write lock.
MAX_BATCH = 256

WriteOp = Callable[[sqlite3.Connection], Any]


class StoreError(Exception):
    """The data dir cannot be used (newer schema, unreadable file)."""


class StoreUnavailable(Exception):
    """A write the store cannot take now; nothing of it was stored, so a retry is safe.

    ``reason`` is ``busy`` (another process holds the database past the busy timeout) or
    ``full`` (SQLITE_FULL: no disk space left).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def unavailable(exc: sqlite3.Error) -> StoreUnavailable | None:
    """The :class:`StoreUnavailable` that ``exc`` means, or None for any other error."""
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreUnavailable("busy", "store busy (locked by another process); retry")
    if code == sqlite3.SQLITE_FULL:
        return StoreUnavailable("full", "store is full (SQLITE_FULL): free disk space")
    return None


class RunRecord(msgspec.Struct, kw_only=True):
    """One run of one flow step for one event, as stored."""

    id: str
    event_id: str
    flow_name: str
    step_name: str
    status: str
    replay: bool = False
    result_status: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    exit_code: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    created_at: str = ""
    started_at: str | None = None
    completed_at: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_wire(self) -> dict[str, Any]:
        """The run as clients see it: SPEC §6 keys plus codex-flows' compatibility keys."""
        result_json = (
            None
            if self.result is None
            else _json_encoder.encode(
                {"flow": self.flow_name, "step": self.step_name, "result": self.result}
            ).decode()
        )
        return {
            "id": self.id,
            "eventId": self.event_id,
            "flowName": self.flow_name,
            "stepName": self.step_name,
            "status": self.status,
            "resultStatus": self.result_status,
            "result": self.result,
            "error": self.error,
            "exitCode": self.exit_code,
            "replay": self.replay,
            "stdoutTail": self.stdout_tail,
            "stderrTail": self.stderr_tail,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "completedAt": self.completed_at,
            "resultJson": result_json,
            "backend": "workspace-adapter",
            "executor": "local",
            "eventPath": None,
            "commandJson": None,
            "stdout": self.stdout_tail,
            "stderr": self.stderr_tail,
        }


class DispatchRecord(msgspec.Struct, frozen=True):
    """What a dispatch committed: ``accepted`` with new runs, or ``duplicate`` with the first."""

    status: str
    run_ids: list[str]
    runs: list[RunRecord]


def new_run_id(replay: bool = False) -> str:
    return f"run_{secrets.token_hex(6)}" + ("_replay" if replay else "")


def new_run(event_id: str, flow_name: str, step_name: str, *, replay: bool = False) -> RunRecord:
    return RunRecord(
        id=new_run_id(replay),
        event_id=event_id,
        flow_name=flow_name,
        step_name=step_name,
        status="queued",
        replay=replay,
        created_at=utc_now_iso(),
    )


def _run_from_row(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        id=row[0],
        event_id=row[1],
        flow_name=row[2],
        step_name=row[3],
        replay=bool(row[4]),
        status=row[5],
        result_status=row[6],
        result=None if row[7] is None else _json_decoder.decode(row[7]),
        error=row[8],
        exit_code=row[9],
        stdout_tail=row[10],
        stderr_tail=row[11],
        created_at=row[12],
        started_at=row[13],
        completed_at=row[14],
    )


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _store_event(db: sqlite3.Connection, event: dict[str, Any], runs: list[RunRecord]) -> Any:
    inserted = db.execute(
        "INSERT INTO events (id, type, received_at, body) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO NOTHING",
        (event["id"], event["type"], event["receivedAt"], _json_encoder.encode(event)),
    ).rowcount
    if not inserted:
        first = [
            r[0]
            for r in db.execute(
                "SELECT id FROM runs WHERE event_id = ? AND replay = 0 ORDER BY seq",
                (event["id"],),
            )
        ]
        return DispatchRecord(status="duplicate", run_ids=first, runs=[])
    _insert_runs(db, runs)
    return DispatchRecord(status="accepted", run_ids=[r.id for r in runs], runs=runs)


def _insert_runs(db: sqlite3.Connection, runs: list[RunRecord]) -> None:
    db.executemany(
        "INSERT INTO runs (id, event_id, flow_name, step_name, replay, status, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (r.id, r.event_id, r.flow_name, r.step_name, int(r.replay), r.status, r.created_at)
            for r in runs
        ],
    )


def _mark_running(db: sqlite3.Connection, run_id: str) -> RunRecord | None:
    # fetchall, not fetchone: an unfinished RETURNING statement keeps its transaction open.
    rows = db.execute(
        f"UPDATE runs SET status = 'running', started_at = ? "
        f"WHERE id = ? AND status = 'queued' RETURNING {_RUN_COLUMNS}",
        (utc_now_iso(), run_id),
    ).fetchall()
    return _run_from_row(rows[0]) if rows else None


def _finish_run(
    db: sqlite3.Connection,
    run_id: str,
    *,
    status: str,
    result_status: str | None = None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    exit_code: int | None = None,
    stdout_tail: str = "",
    stderr_tail: str = "",
    only_from: tuple[str, ...] = ("queued", "running"),
) -> RunRecord | None:
    marks = ", ".join("?" for _ in only_from)
    rows = db.execute(
        f"UPDATE runs SET status = ?, result_status = ?, result = ?, error = ?, "
        f"exit_code = ?, stdout_tail = ?, stderr_tail = ?, completed_at = ? "
        f"WHERE id = ? AND status IN ({marks}) RETURNING {_RUN_COLUMNS}",
        (
            status,
            result_status,
            None if result is None else _json_encoder.encode(result),
            error,
            exit_code,
            stdout_tail,
            stderr_tail,
            utc_now_iso(),
            run_id,
            *only_from,
        ),
    ).fetchall()
    return _run_from_row(rows[0]) if rows else None


def _recover(db: sqlite3.Connection) -> tuple[list[RunRecord], list[RunRecord]]:
    failed = [
        _run_from_row(r)
        for r in db.execute(
            f"UPDATE runs SET status = 'failed', error = 'backend restarted', "
            f"completed_at = ? WHERE status = 'running' RETURNING {_RUN_COLUMNS}",
            (utc_now_iso(),),
        ).fetchall()
    ]
    queued = [
        _run_from_row(r)
        for r in db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE status = 'queued' ORDER BY seq")
    ]
    return failed, queued


def _rollback(db: sqlite3.Connection) -> None:
    # SQLITE_FULL (and a few other errors) roll the transaction back by themselves; a second
    # ROLLBACK would fail and hide the real error.
    if db.in_transaction:
        db.execute("ROLLBACK")


class _Write:
    """One write waiting for (or done with) its group commit."""

    __slots__ = ("error", "op", "result")

    def __init__(self, op: WriteOp) -> None:
        self.op = op
        self.result: Any = None
        self.error: BaseException | None = None


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
        # The list reader is used from worker threads, one at a time.
        self._reader_lock = threading.Lock()
        self.writer = StoreWriter(self)

    def close(self) -> None:
        self.writer.stop()
        self._reader.close()
        self._point_reader.close()
        self._db.close()

    def _migrate(self) -> None:
        def migrate(db: sqlite3.Connection) -> None:
            # Checked again under the write lock: another process may have created it first.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}; this program knows "
                    f"{SCHEMA_VERSION}: upgrade workspace-adapter"
                )
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        self.transaction(migrate)

    # --- writes ------------------------------------------------------------------------------

    def transaction(self, op: WriteOp) -> Any:
        """Run ``op`` on the writer connection in one ``BEGIN IMMEDIATE`` transaction."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = op(db)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        return result

    def commit_batch(self, batch: list[_Write]) -> None:
        """Commit ``batch`` in one transaction and give each write its answer (worker thread).

        When any write fails, the whole transaction is rolled back (SQLITE_FULL does that by
        itself) and every write is tried again in a transaction of its own, so one bad write
        sinks nothing else and each gets its own answer. Errors are rare, so this is cheaper
        than a savepoint around every write.
        """
        db = self._db
        if len(batch) > 1:
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
                _rollback(db)
            else:
                for write, result in zip(batch, results, strict=True):
                    write.result = result
                return
        for write in batch:
            try:
                write.result = self.transaction(write.op)
            except Exception as exc:
                write.error = exc

    def dispatch(self, event: dict[str, Any], runs: list[RunRecord]) -> DispatchRecord:
        """Store ``event`` and its ``runs`` in one transaction, or report the first dispatch."""
        record: DispatchRecord = self.transaction(lambda db: _store_event(db, event, runs))
        return record

    def add_runs(self, runs: list[RunRecord]) -> None:
        """Store replay runs of an event already stored."""
        self.transaction(lambda db: _insert_runs(db, runs))

    def mark_running(self, run_id: str) -> RunRecord | None:
        """Queued → running; None when the run was not queued (canceled meanwhile)."""
        run: RunRecord | None = self.transaction(lambda db: _mark_running(db, run_id))
        return run

    def finish_run(self, run_id: str, **fields: Any) -> RunRecord | None:
        """Record a run's end; None when it had already ended (the first end wins).

        ``fields``: ``status`` and optionally ``result_status, result, error, exit_code,
        stdout_tail, stderr_tail, only_from`` (the statuses it may end from).
        """
        run: RunRecord | None = self.transaction(lambda db: _finish_run(db, run_id, **fields))
        return run

    def recover(self) -> tuple[list[RunRecord], list[RunRecord]]:
        """After a restart: fail the runs left ``running``; return them and the ``queued`` ones."""
        found: tuple[list[RunRecord], list[RunRecord]] = self.transaction(_recover)
        return found

    # --- point reads: indexed, committed data only, on the loop ------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._point_reader.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        return None if row is None else _run_from_row(row)

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        row = self._point_reader.execute(
            "SELECT body FROM events WHERE id = ?", (event_id,)
        ).fetchone()
        return None if row is None else dict(_json_decoder.decode(row[0]))

    def runs_of_event(self, event_id: str) -> list[RunRecord]:
        return [
            _run_from_row(r)
            for r in self._point_reader.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE event_id = ? ORDER BY seq", (event_id,)
            )
        ]

    # --- list reads: call from a worker thread -----------------------------------------------

    def list_events(self, event_type: str | None, limit: int) -> list[dict[str, Any]]:
        sql = "SELECT body FROM events"
        args: list[Any] = []
        if event_type is not None:
            sql += " WHERE type = ?"
            args.append(event_type)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self._reader_lock:
            rows = self._reader.execute(sql, args).fetchall()
        return [dict(_json_decoder.decode(r[0])) for r in rows]

    def list_runs(self, event_id: str | None, status: str | None, limit: int) -> list[RunRecord]:
        clauses: list[str] = []
        args: list[Any] = []
        if event_id is not None:
            clauses.append("event_id = ?")
            args.append(event_id)
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        args.append(limit)
        with self._reader_lock:
            rows = self._reader.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY seq DESC LIMIT ?", args
            ).fetchall()
        return [_run_from_row(r) for r in rows]


def _by_loop(
    batch: list[tuple[_Write, asyncio.Future[None]]],
) -> dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]]:
    loops: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, future in batch:
        loops.setdefault(future.get_loop(), []).append(future)
    return loops


def _wake(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


class StoreWriter:
    """The daemon's way to write: group commits on one dedicated thread, never on the loop.

    Each call queues its write and waits; the thread takes everything queued (up to
    :data:`MAX_BATCH` writes), commits it, and wakes the callers once per batch. A call returns
    once its write is committed, and raises :class:`StoreUnavailable` when the store is locked
    by another process or full (nothing of the write is stored then). Waiting is shielded from
    cancellation: a write that was queued is committed and answered, even if its caller is
    being cancelled (a client that hung up mid-dispatch still gets its runs queued).
    """

    def __init__(self, store: BackendStore) -> None:
        self.store = store
        self._requests: queue.SimpleQueue[tuple[_Write, asyncio.Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    async def write(self, op: WriteOp) -> Any:
        """Run ``op`` in the next group commit; its result once committed."""
        write = _Write(op)
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._thread is None:
            self._start()
        self._requests.put((write, committed))
        with anyio.CancelScope(shield=True):
            await committed
        if write.error is not None:
            if isinstance(write.error, sqlite3.Error):
                problem = unavailable(write.error)
                if problem is not None:
                    raise problem from write.error
            raise write.error
        return write.result

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._commit_loop, name="backend-store-writer", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        """Let the thread finish what is queued and end (before the store closes)."""
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join()
            self._thread = None

    def _commit_loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._requests.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._requests.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            writes = [write for write, _ in batch]
            try:
                self.store.commit_batch(writes)
            except Exception as exc:  # commit_batch answers every write; this is a last resort
                for write in writes:
                    if write.error is None:
                        write.error = exc
            for loop, futures in _by_loop(batch).items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_wake, futures)

    async def dispatch(self, event: dict[str, Any], runs: list[RunRecord]) -> DispatchRecord:
        """:meth:`BackendStore.dispatch`, group-committed."""
        record: DispatchRecord = await self.write(lambda db: _store_event(db, event, runs))
        return record

    async def add_runs(self, runs: list[RunRecord]) -> None:
        """:meth:`BackendStore.add_runs`, group-committed."""
        await self.write(lambda db: _insert_runs(db, runs))

    async def mark_running(self, run_id: str) -> RunRecord | None:
        """:meth:`BackendStore.mark_running`, group-committed."""
        run: RunRecord | None = await self.write(lambda db: _mark_running(db, run_id))
        return run

    async def finish_run(self, run_id: str, **fields: Any) -> RunRecord | None:
        """:meth:`BackendStore.finish_run`, group-committed."""
        run: RunRecord | None = await self.write(lambda db: _finish_run(db, run_id, **fields))
        return run
