"""The store's writes, each one function of a connection inside a transaction it does not own.

:class:`~workspace_adapter.backend.store.BackendStore` runs them in a transaction of their own
(start-up, tests, tools); :class:`~workspace_adapter.backend.groupcommit.StoreWriter` group-commits
them for the daemon. Either way a write sees only its connection, so both paths store the same.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from workspace_adapter.backend.records import (
    RUN_COLUMNS,
    DispatchRecord,
    FlowRun,
    json_encoder,
    run_from_row,
)
from workspace_adapter.base.status import Status
from workspace_adapter.base.times import utc_now_iso
from workspace_adapter.protocol import DispatchStatus

WriteOp = Callable[[sqlite3.Connection], Any]


def store_event(db: sqlite3.Connection, event: dict[str, Any], runs: list[FlowRun]) -> Any:
    inserted = db.execute(
        "INSERT INTO events (id, type, received_at, body) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO NOTHING",
        (event["id"], event["type"], event["receivedAt"], json_encoder.encode(event)),
    ).rowcount
    if not inserted:
        first = [
            r[0]
            for r in db.execute(
                "SELECT id FROM runs WHERE event_id = ? AND replay = 0 ORDER BY seq",
                (event["id"],),
            )
        ]
        return DispatchRecord(status=DispatchStatus.DUPLICATE, run_ids=first, runs=[])
    insert_runs(db, runs)
    return DispatchRecord(status=DispatchStatus.ACCEPTED, run_ids=[r.id for r in runs], runs=runs)


def insert_runs(db: sqlite3.Connection, runs: list[FlowRun]) -> None:
    db.executemany(
        "INSERT INTO runs (id, event_id, flow_name, step_name, replay, status, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (r.id, r.event_id, r.flow_name, r.step_name, int(r.replay), r.status, r.created_at)
            for r in runs
        ],
    )


def mark_running(db: sqlite3.Connection, run_id: str) -> FlowRun | None:
    # fetchall, not fetchone: an unfinished RETURNING statement keeps its transaction open.
    rows = db.execute(
        f"UPDATE runs SET status = ?, started_at = ? "
        f"WHERE id = ? AND status = ? RETURNING {RUN_COLUMNS}",
        (Status.RUNNING, utc_now_iso(), run_id, Status.QUEUED),
    ).fetchall()
    return run_from_row(rows[0]) if rows else None


def finish_run(
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
    only_from: tuple[str, ...] = (Status.QUEUED, Status.RUNNING),
) -> FlowRun | None:
    marks = ", ".join("?" for _ in only_from)
    rows = db.execute(
        f"UPDATE runs SET status = ?, result_status = ?, result = ?, error = ?, "
        f"exit_code = ?, stdout_tail = ?, stderr_tail = ?, completed_at = ? "
        f"WHERE id = ? AND status IN ({marks}) RETURNING {RUN_COLUMNS}",
        (
            status,
            result_status,
            None if result is None else json_encoder.encode(result),
            error,
            exit_code,
            stdout_tail,
            stderr_tail,
            utc_now_iso(),
            run_id,
            *only_from,
        ),
    ).fetchall()
    return run_from_row(rows[0]) if rows else None


def recover(db: sqlite3.Connection) -> tuple[list[FlowRun], list[FlowRun]]:
    """The runs an earlier backend left: ``(running, queued)``, oldest first.

    Nothing is changed here: the run queue takes up each running run (its step may still run,
    or may have ended while no backend was there) and starts the queued ones.
    """
    running, queued = (
        [
            run_from_row(r)
            for r in db.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE status = ? ORDER BY seq", (status,)
            )
        ]
        for status in (Status.RUNNING, Status.QUEUED)
    )
    return running, queued
