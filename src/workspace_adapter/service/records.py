"""The service path's records: source cursors, seen releases, events, attempts, dispatches.

What a poll found is recorded in one transaction *before* anything is sent: the seen entries,
their events and their attempts, each new attempt claimed by the process that created it. A
crash after that commit loses nothing (the attempt is still ``undelivered`` and is redelivered)
and duplicates nothing (the seen entries, and the unique index on ``(upstreamRepo,
upstreamTag)`` for ``dispatch``: a release seen twice, or by two sources, is one attempt).
Claims name a process (pid + start marker), so the claim of a process that died is void.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from workspace_adapter.base.processes import process_alive
from workspace_adapter.base.sqlitefile import open_readonly, transaction
from workspace_adapter.base.status import Status
from workspace_adapter.base.times import iso
from workspace_adapter.service.schema import (
    ATTEMPT_COLUMNS,
    JSON_COLUMNS,
    Attempt,
    Operation,
    PollOutcome,
    RecordStore,
    SeenRelease,
    SourceCursor,
    attempt_columns,
    data_dir,
    migrate,
    stored_version,
)


def new_attempt_id(now: dt.datetime) -> str:
    """``att_<time>_<random>``: sorts by creation, short enough to type."""
    return f"att_{now.astimezone(dt.UTC).strftime('%Y%m%dT%H%M%S')}_{os.urandom(4).hex()}"


def _row_to_attempt(row: tuple[Any, ...]) -> Attempt:
    names = [c.strip() for c in ATTEMPT_COLUMNS.split(",")]
    data = dict(zip(names, row, strict=True))
    for name in JSON_COLUMNS:
        data[name] = msgspec.json.decode(data[name])
    return Attempt(**data)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class Records(RecordStore):
    """Every read and write of the service path, each one transaction."""

    @classmethod
    def for_workspace(cls, root: Path) -> Records:
        return cls(data_dir(root))

    def open(self) -> Records:
        super().open()
        return self

    # --- sources -------------------------------------------------------------------------

    def cursor(self, source_id: str) -> SourceCursor | None:
        with self.connect(write=False) as db:
            return self._cursor(db, source_id)

    def _cursor(self, db: sqlite3.Connection, source_id: str) -> SourceCursor | None:
        row = db.execute(
            "SELECT source_id, primed_at, last_polled_at, next_poll_at, failures, last_error "
            "FROM source_cursors WHERE source_id = ?",
            (source_id,),
        ).fetchone()
        if row is None:
            return None
        names = ("source_id", "primed_at", "last_polled_at", "next_poll_at")
        return SourceCursor(
            **dict(zip(names, row[:4], strict=True)), failures=row[4], last_error=row[5]
        )

    def record_failure(self, source_id: str, error: str, now: dt.datetime, retry_at: str) -> int:
        """Note a failed poll and when to try again; returns the failures in a row."""
        with self.connect() as db:
            db.execute(
                "INSERT INTO source_cursors (source_id, last_polled_at, next_poll_at, failures, "
                "last_error, updated_at) VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (source_id) DO "
                "UPDATE SET last_polled_at = excluded.last_polled_at, next_poll_at = "
                "excluded.next_poll_at, failures = failures + 1, last_error = excluded.last_error, "
                "updated_at = excluded.updated_at",
                (source_id, iso(now), retry_at, error, iso(now)),
            )
            row = db.execute(
                "SELECT failures FROM source_cursors WHERE source_id = ?", (source_id,)
            ).fetchone()
        return int(row[0])

    def record_poll(
        self,
        source_id: str,
        releases: list[SeenRelease],
        *,
        prime_only: bool,
        repo: str,
        now: dt.datetime,
        next_poll_at: str,
    ) -> PollOutcome:
        """Record one successful poll in one transaction; new attempts are claimed by us.

        The first poll of a source (no cursor yet) primes it: with ``prime_only`` its
        releases are only remembered; without, each becomes an event and an attempt, oldest
        first. Later polls turn every release not seen before into an event and an attempt,
        or link it to the attempt that release already has.
        """
        stamp = iso(now)
        outcome = PollOutcome()
        with self.connect() as db:
            cursor = self._cursor(db, source_id)
            priming = cursor is None or cursor.primed_at is None
            outcome.primed = priming
            for release in releases:
                inserted = db.execute(
                    "INSERT OR IGNORE INTO seen_entries (source_id, tag, sha, url, published_at, "
                    "primed, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        source_id,
                        release.tag,
                        release.sha,
                        release.url,
                        release.published_at,
                        int(priming and prime_only),
                        stamp,
                    ),
                ).rowcount
                if not inserted:
                    continue
                outcome.seen += 1
                if priming and prime_only:
                    continue
                self._record_new(db, source_id, release, repo, now, outcome)
            db.execute(
                "INSERT INTO source_cursors (source_id, primed_at, last_polled_at, next_poll_at, "
                "failures, updated_at) VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (source_id) DO "
                "UPDATE SET primed_at = COALESCE(primed_at, excluded.primed_at), last_polled_at "
                "= excluded.last_polled_at, next_poll_at = excluded.next_poll_at, failures = 0, "
                "last_error = NULL, updated_at = excluded.updated_at",
                (source_id, stamp, stamp, next_poll_at, stamp),
            )
        return outcome

    def _record_new(
        self,
        db: sqlite3.Connection,
        source_id: str,
        release: SeenRelease,
        repo: str,
        now: dt.datetime,
        outcome: PollOutcome,
    ) -> None:
        event = release.event
        stamp = iso(now)
        db.execute(
            "INSERT OR IGNORE INTO flow_events (id, type, source_id, body, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (event["id"], event["type"], source_id, _json(event), stamp),
        )
        existing = db.execute(
            "SELECT id FROM attempts WHERE upstream_repo = ? AND upstream_tag = ? "
            "AND operation = 'dispatch'",
            (repo, release.tag),
        ).fetchone()
        if existing is not None:
            attempt_id = str(existing[0])
            outcome.linked.append((release.tag, attempt_id))
        else:
            attempt_id = new_attempt_id(now)
            db.execute(
                "INSERT INTO attempts (id, event_id, operation, status, upstream_repo, "
                "upstream_tag, next_delivery_at, claimed_pid, claimed_marker, created_at, "
                "updated_at) VALUES (?, ?, 'dispatch', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt_id,
                    event["id"],
                    Status.UNDELIVERED,
                    repo,
                    release.tag,
                    stamp,
                    self.pid,
                    self.marker,
                    stamp,
                    stamp,
                ),
            )
            outcome.claimed.append(self._attempt(db, attempt_id))
        db.execute(
            "UPDATE seen_entries SET event_id = ?, attempt_id = ? WHERE source_id = ? AND tag = ?",
            (event["id"], attempt_id, source_id, release.tag),
        )

    # --- attempts ------------------------------------------------------------------------

    def _attempt(self, db: sqlite3.Connection, attempt_id: str) -> Attempt:
        columns = attempt_columns(db, self.path)
        row = db.execute(f"SELECT {columns} FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
        if row is None:
            raise KeyError(attempt_id)
        return _row_to_attempt(row)

    def attempt(self, attempt_id: str) -> Attempt | None:
        with self.connect(write=False) as db:
            try:
                return self._attempt(db, attempt_id)
            except KeyError:
                return None

    def attempts(self, status: str | None = None, limit: int | None = None) -> list[Attempt]:
        """Newest first, optionally only those with ``status``."""
        filters = ""
        args: list[Any] = []
        if status is not None:
            filters += " WHERE status = ?"
            args.append(status)
        filters += " ORDER BY seq DESC"
        if limit is not None:
            filters += " LIMIT ?"
            args.append(limit)
        with self.connect(write=False) as db:
            columns = attempt_columns(db, self.path)
            rows = db.execute(f"SELECT {columns} FROM attempts{filters}", args)
            return [_row_to_attempt(r) for r in rows]

    def event(self, event_id: str) -> dict[str, Any] | None:
        with self.connect(write=False) as db:
            row = db.execute("SELECT body FROM flow_events WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else dict(msgspec.json.decode(row[0]))

    def new_attempt(self, operation: Operation, of: Attempt, now: dt.datetime) -> Attempt:
        """A ``retry`` or ``replay`` attempt of ``of``'s event, claimed by this process."""
        attempt_id = new_attempt_id(now)
        stamp = iso(now)
        with self.connect() as db:
            db.execute(
                "INSERT INTO attempts (id, event_id, operation, status, upstream_repo, "
                "upstream_tag, retry_of, claimed_pid, claimed_marker, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt_id,
                    of.event_id,
                    operation,
                    Status.UNDELIVERED,
                    of.upstream_repo,
                    of.upstream_tag,
                    of.id,
                    self.pid,
                    self.marker,
                    stamp,
                    stamp,
                ),
            )
            return self._attempt(db, attempt_id)

    def _claim_free(self, pid: int | None, marker: str | None) -> bool:
        if pid is None:
            return True
        if pid == self.pid and marker == self.marker:
            return False  # ours already: being delivered by this very process
        return not process_alive(pid, marker)

    def claim(self, status: str, now: dt.datetime) -> list[Attempt]:
        """Claim the attempts in ``status`` that are due and that no live process holds.

        ``undelivered`` attempts are due at their ``next_delivery_at``; ``started`` ones are
        those whose follower died, to be followed again. Oldest first.
        """
        stamp = iso(now)
        claimed: list[Attempt] = []
        with self.connect() as db:
            rows = db.execute(
                "SELECT id, claimed_pid, claimed_marker FROM attempts WHERE status = ? AND "
                "(next_delivery_at IS NULL OR next_delivery_at <= ?) ORDER BY seq",
                (status, stamp),
            ).fetchall()
            for attempt_id, pid, marker in rows:
                if not self._claim_free(pid, marker):
                    continue
                db.execute(
                    "UPDATE attempts SET claimed_pid = ?, claimed_marker = ? WHERE id = ?",
                    (self.pid, self.marker, attempt_id),
                )
                claimed.append(self._attempt(db, attempt_id))
        return claimed

    def next_delivery(self) -> str | None:
        """When the earliest undelivered attempt is due, for the watch loop's sleep."""
        with self.connect(write=False) as db:
            row = db.execute(
                "SELECT MIN(next_delivery_at) FROM attempts WHERE status = ?",
                (Status.UNDELIVERED,),
            ).fetchone()
        return None if row is None else row[0]

    def log_dispatch(
        self,
        attempt: Attempt,
        method: str,
        outcome: str,
        now: dt.datetime,
        *,
        run_ids: list[str] | None = None,
        matched: int | None = None,
        message: str | None = None,
    ) -> None:
        with self.connect() as db:
            db.execute(
                "INSERT INTO dispatches (attempt_id, event_id, method, outcome, run_ids, matched, "
                "message, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt.id,
                    attempt.event_id,
                    method,
                    outcome,
                    _json(run_ids or []),
                    matched,
                    message,
                    iso(now),
                ),
            )

    def dispatches(self, attempt_id: str) -> list[dict[str, Any]]:
        with self.connect(write=False) as db:
            rows = db.execute(
                "SELECT method, outcome, run_ids, matched, message, at FROM dispatches "
                "WHERE attempt_id = ? ORDER BY seq",
                (attempt_id,),
            ).fetchall()
        keys = ("method", "outcome", "runIds", "matched", "message", "at")
        out = [dict(zip(keys, row, strict=True)) for row in rows]
        for item in out:
            item["runIds"] = msgspec.json.decode(item["runIds"])
        return out

    def mark_undelivered(
        self, attempt_id: str, message: str, now: dt.datetime, retry_at: str | None
    ) -> Attempt:
        """The backend never got it: release the claim, redeliver at ``retry_at``."""
        with self.connect() as db:
            db.execute(
                "UPDATE attempts SET status = ?, message = ?, deliveries = deliveries + 1, "
                "next_delivery_at = ?, claimed_pid = NULL, claimed_marker = NULL, "
                "updated_at = ? WHERE id = ?",
                (Status.UNDELIVERED, message, retry_at, iso(now), attempt_id),
            )
            return self._attempt(db, attempt_id)

    def mark_started(self, attempt_id: str, run_ids: list[str], now: dt.datetime) -> Attempt:
        with self.connect() as db:
            db.execute(
                "UPDATE attempts SET status = ?, run_ids = ?, message = NULL, "
                "deliveries = deliveries + 1, next_delivery_at = NULL, updated_at = ? "
                "WHERE id = ?",
                (Status.STARTED, _json(run_ids), iso(now), attempt_id),
            )
            return self._attempt(db, attempt_id)

    def release(self, attempt_id: str) -> None:
        """Give up the claim (a follower that lost the backend); the attempt stays as it is."""
        with self.connect() as db:
            db.execute(
                "UPDATE attempts SET claimed_pid = NULL, claimed_marker = NULL WHERE id = ?",
                (attempt_id,),
            )

    def finish(
        self,
        attempt_id: str,
        status: str,
        now: dt.datetime,
        *,
        run_ids: list[str],
        run_statuses: dict[str, str],
        candidate_refs: list[dict[str, Any]],
        message: str | None,
        patches: list[dict[str, Any]] | None = None,
    ) -> Attempt:
        """The runs ended: store their outcome (with their patch tables) and release the claim."""
        with self.connect() as db:
            db.execute(
                "UPDATE attempts SET status = ?, run_ids = ?, run_statuses = ?, candidate_refs "
                "= ?, patches = ?, message = ?, next_delivery_at = NULL, claimed_pid = NULL, "
                "claimed_marker = NULL, updated_at = ? WHERE id = ?",
                (
                    status,
                    _json(run_ids),
                    _json(run_statuses),
                    _json(candidate_refs),
                    _json(patches or []),
                    message,
                    iso(now),
                    attempt_id,
                ),
            )
            return self._attempt(db, attempt_id)

    def prune(
        self, cutoff: str, *, dry_run: bool = False, busy_timeout: float = 5.0
    ) -> dict[str, int]:
        """Delete what no decision needs any more; ``{"dispatches": n, "events": n}`` deleted.

        ``dispatches`` rows (the delivery log) logged before ``cutoff`` of attempts that ended
        (not ``undelivered`` or ``started``); ``flow_events`` created before ``cutoff`` that no
        attempt delivers (a release linked from a second source). Attempts, seen entries and
        source cursors are kept: they are what stops a release from being dispatched twice. So
        is an attempt's own event: ``attempts retry`` dispatches it when the backend no longer
        knows it (after a backend prune); it is one small row per release. One transaction,
        waiting ``busy_timeout`` seconds for the write lock (which migrates an older store
        first); never creates the file.
        """
        finished = "SELECT id FROM attempts WHERE status NOT IN (:undelivered, :started)"
        dispatches = (
            "FROM dispatches WHERE COALESCE(julianday(at) < julianday(:cut), 0) "
            f"AND attempt_id IN ({finished})"
        )
        events = (
            "FROM flow_events WHERE COALESCE(julianday(created_at) < julianday(:cut), 0) "
            "AND id NOT IN (SELECT event_id FROM attempts)"
        )
        unfinished = {"undelivered": Status.UNDELIVERED, "started": Status.STARTED}
        uri = self.path.resolve().as_uri() + "?mode=rw"
        db = open_readonly(self.path) if dry_run else sqlite3.connect(uri, uri=True)
        try:
            db.isolation_level = None
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            with transaction(db, "BEGIN" if dry_run else "BEGIN IMMEDIATE"):
                if dry_run:
                    stored_version(db, self.path)
                else:
                    migrate(db, self.path)
                verb = "SELECT count(*)" if dry_run else "DELETE"
                found = {}
                for name, rows in (("dispatches", dispatches), ("events", events)):
                    cursor = db.execute(f"{verb} {rows}", {"cut": cutoff, **unfinished})
                    found[name] = cursor.fetchone()[0] if dry_run else cursor.rowcount
        finally:
            db.close()
        return found
