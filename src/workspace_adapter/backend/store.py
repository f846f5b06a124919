"""The backend's SQLite store: events and the runs they started (SPEC §6).

WAL with ``synchronous=NORMAL``: a committed dispatch survives a crash of the backend. Every
write is one short transaction on the event loop's thread (microseconds); list queries, which
can touch a thousand rows, go through a separate read connection on a worker thread.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Any

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


class StoreError(Exception):
    """The data dir cannot be used (newer schema, unreadable file)."""


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


class BackendStore:
    """Events and runs in ``<data dir>/backend.sqlite``; one writer, one reader connection."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_NAME
        self._db = _connect(self.path)
        self._migrate()
        self._reader = _connect(self.path, readonly=True)
        # The reader is used from worker threads, one at a time.
        self._reader_lock = threading.Lock()

    def close(self) -> None:
        self._reader.close()
        self._db.close()

    def _migrate(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
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
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # --- writes: short transactions ----------------------------------------------------------

    def dispatch(self, event: dict[str, Any], runs: list[RunRecord]) -> DispatchRecord:
        """Store ``event`` and its ``runs`` in one transaction, or report the first dispatch."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
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
                db.execute("COMMIT")
                return DispatchRecord(status="duplicate", run_ids=first, runs=[])
            self._insert_runs(runs)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return DispatchRecord(status="accepted", run_ids=[r.id for r in runs], runs=runs)

    def add_runs(self, runs: list[RunRecord]) -> None:
        """Store replay runs of an event already stored."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            self._insert_runs(runs)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _insert_runs(self, runs: list[RunRecord]) -> None:
        self._db.executemany(
            "INSERT INTO runs (id, event_id, flow_name, step_name, replay, status, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (r.id, r.event_id, r.flow_name, r.step_name, int(r.replay), r.status, r.created_at)
                for r in runs
            ],
        )

    def mark_running(self, run_id: str) -> RunRecord | None:
        """Queued → running; None when the run was not queued (canceled meanwhile)."""
        # fetchall, not fetchone: an unfinished RETURNING statement keeps its transaction open.
        rows = self._db.execute(
            f"UPDATE runs SET status = 'running', started_at = ? "
            f"WHERE id = ? AND status = 'queued' RETURNING {_RUN_COLUMNS}",
            (utc_now_iso(), run_id),
        ).fetchall()
        return _run_from_row(rows[0]) if rows else None

    def finish_run(
        self,
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
        """Record a run's end; None when it had already ended (the first end wins)."""
        marks = ", ".join("?" for _ in only_from)
        rows = self._db.execute(
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

    def recover(self) -> tuple[list[RunRecord], list[RunRecord]]:
        """After a restart: fail the runs left ``running``; return them and the ``queued`` ones."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
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
                for r in db.execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE status = 'queued' ORDER BY seq"
                )
            ]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return failed, queued

    # --- point reads: indexed, on the loop ---------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        return None if row is None else _run_from_row(row)

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT body FROM events WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else dict(_json_decoder.decode(row[0]))

    def runs_of_event(self, event_id: str) -> list[RunRecord]:
        return [
            _run_from_row(r)
            for r in self._db.execute(
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
