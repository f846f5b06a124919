"""The service path's records in DATA_DIR (SPEC §9): cursors, seen entries, events, attempts.

One SQLite file in WAL mode; every access is one short transaction, writers take
``BEGIN IMMEDIATE`` so two watchers serialise on the write lock. What a poll found is recorded
in one transaction *before* anything is sent: the seen entries, their events and their
attempts, each new attempt claimed by the process that created it. A crash after that commit
loses nothing (the attempt is still ``undelivered`` and is redelivered) and duplicates nothing
(the seen entries and the unique index on ``(upstreamRepo, upstreamTag)`` for ``dispatch``).
Claims name a process (pid + start marker), so a claim of a process that died is void.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec

from workspace_adapter.state import iso, process_alive, process_marker

SCHEMA_VERSION = 1
DB_NAME = "records.sqlite3"
DATA_DIR_ENV = "DATA_DIR"

Operation = Literal["dispatch", "retry", "replay"]

_SCHEMA = """
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

_ATTEMPT_COLUMNS = (
    "id, event_id, operation, status, upstream_repo, upstream_tag, run_ids, run_statuses, "
    "candidate_refs, message, retry_of, deliveries, next_delivery_at, created_at, updated_at"
)
_JSON_COLUMNS = ("run_ids", "run_statuses", "candidate_refs")


class Attempt(msgspec.Struct, kw_only=True, rename="camel"):
    """A maintenance attempt: one delivery of a release event and the outcome of its runs."""

    id: str
    event_id: str
    operation: Operation
    status: str  # undelivered → started → the worst flow status of its runs
    upstream_repo: str
    upstream_tag: str
    run_ids: list[str] = msgspec.field(default_factory=list)
    run_statuses: dict[str, str] = msgspec.field(default_factory=dict)
    candidate_refs: list[dict[str, Any]] = msgspec.field(default_factory=list)
    message: str | None = None
    retry_of: str | None = None
    deliveries: int = 0
    next_delivery_at: str | None = None
    created_at: str
    updated_at: str


class SourceCursor(msgspec.Struct, kw_only=True):
    """Where a source stands: primed or not, when to poll it next, how often it failed."""

    source_id: str
    primed_at: str | None
    last_polled_at: str | None
    next_poll_at: str | None
    failures: int
    last_error: str | None


class SeenRelease(msgspec.Struct, kw_only=True):
    """One release of a poll, with the event it becomes when it is new."""

    tag: str
    sha: str | None
    url: str | None
    published_at: str | None
    event: dict[str, Any]


class PollOutcome(msgspec.Struct, kw_only=True):
    """What recording one poll did: primed, new attempts (claimed by us), releases linked."""

    primed: bool = False
    seen: int = 0
    claimed: list[Attempt] = msgspec.field(default_factory=list)
    linked: list[tuple[str, str]] = msgspec.field(default_factory=list)  # (tag, attempt id)


def data_dir(root: Path) -> Path:
    """``$DATA_DIR`` when set (relative to the cwd), else ``<root>/.workspace/data``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser().resolve() if env else root / ".workspace" / "data"


def new_attempt_id(now: dt.datetime) -> str:
    """``att_<time>_<random>``: sorts by creation, short enough to type."""
    return f"att_{now.astimezone(dt.UTC).strftime('%Y%m%dT%H%M%S')}_{os.urandom(4).hex()}"


def _row_to_attempt(row: tuple[Any, ...]) -> Attempt:
    names = [c.strip() for c in _ATTEMPT_COLUMNS.split(",")]
    data = dict(zip(names, row, strict=True))
    for name in _JSON_COLUMNS:
        data[name] = msgspec.json.decode(data[name])
    return Attempt(**data)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class Records:
    """The DATA_DIR store; :meth:`connect` is one transaction."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / DB_NAME
        self.pid = os.getpid()
        self.marker = process_marker(self.pid)

    @classmethod
    def for_workspace(cls, root: Path) -> Records:
        return cls(data_dir(root))

    def open(self) -> Records:
        """Create the database when missing (under a lock, built aside, renamed into place)."""
        if self.path.is_file():
            self._check_version()
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "records.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.is_file():  # another process created it while we waited
                return self
            tmp = self.directory / f".{DB_NAME}.{os.getpid()}.tmp"
            tmp.unlink(missing_ok=True)
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("PRAGMA journal_mode = WAL")
            finally:
                db.close()
            os.replace(tmp, self.path)
        return self

    def _check_version(self) -> None:
        from workspace_adapter.errors import UserError

        with self.connect(write=False) as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
        if version != SCHEMA_VERSION:
            raise UserError(
                f"{self.path}: records schema version {version}, this program reads "
                f"{SCHEMA_VERSION}; upgrade workspace-adapter or point DATA_DIR elsewhere"
            )

    @contextlib.contextmanager
    def connect(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; writers begin IMMEDIATE so read-then-write decisions are safe."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

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
                "updated_at) VALUES (?, ?, 'dispatch', 'undelivered', ?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt_id,
                    event["id"],
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
        row = db.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE id = ?", (attempt_id,)
        ).fetchone()
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
        sql = f"SELECT {_ATTEMPT_COLUMNS} FROM attempts"
        args: list[Any] = []
        if status is not None:
            sql += " WHERE status = ?"
            args.append(status)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self.connect(write=False) as db:
            return [_row_to_attempt(r) for r in db.execute(sql, args)]

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
                "VALUES (?, ?, ?, 'undelivered', ?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt_id,
                    of.event_id,
                    operation,
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
                "SELECT MIN(next_delivery_at) FROM attempts WHERE status = 'undelivered'"
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
                "UPDATE attempts SET status = 'undelivered', message = ?, deliveries = "
                "deliveries + 1, next_delivery_at = ?, claimed_pid = NULL, claimed_marker = "
                "NULL, updated_at = ? WHERE id = ?",
                (message, retry_at, iso(now), attempt_id),
            )
            return self._attempt(db, attempt_id)

    def mark_started(self, attempt_id: str, run_ids: list[str], now: dt.datetime) -> Attempt:
        with self.connect() as db:
            db.execute(
                "UPDATE attempts SET status = 'started', run_ids = ?, message = NULL, "
                "deliveries = deliveries + 1, next_delivery_at = NULL, updated_at = ? "
                "WHERE id = ?",
                (_json(run_ids), iso(now), attempt_id),
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
    ) -> Attempt:
        """The runs ended: store their outcome and release the claim."""
        with self.connect() as db:
            db.execute(
                "UPDATE attempts SET status = ?, run_ids = ?, run_statuses = ?, candidate_refs "
                "= ?, message = ?, next_delivery_at = NULL, claimed_pid = NULL, claimed_marker "
                "= NULL, updated_at = ? WHERE id = ?",
                (
                    status,
                    _json(run_ids),
                    _json(run_statuses),
                    _json(candidate_refs),
                    message,
                    iso(now),
                    attempt_id,
                ),
            )
            return self._attempt(db, attempt_id)
