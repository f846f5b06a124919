"""What the DATA_DIR store holds and how it is opened: one SQLite file, WAL.

Every access is one short transaction (:meth:`RecordStore.connect`); writers take
``BEGIN IMMEDIATE`` so two watchers serialise on the write lock. The file is created under an
exclusive lock, built aside and renamed into place, so a crash never leaves half a store. The
schema carries a version (``PRAGMA user_version``). A store of an older version is read as it is
and migrated by the first write transaction, inside it, so a reader (``workspace attempts``)
never writes and a crash mid-migration leaves the old version whole; every row is kept. A store
of a newer version, or a file with no schema, is refused.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec

from workspace_adapter.base import status as status_rule
from workspace_adapter.base.errors import EXIT_BACKEND_UNREACHABLE, EXIT_FAILED, UserError
from workspace_adapter.base.processes import process_marker
from workspace_adapter.base.sqlitefile import (
    SchemaVersionError,
    check_version,
    create_atomically,
    describe_error,
    transaction,
)
from workspace_adapter.base.status import Status

SCHEMA_VERSION = 2
DB_NAME = "records.sqlite3"
DATA_DIR_ENV = "DATA_DIR"

Operation = Literal["dispatch", "retry", "replay"]

UNREACHABLE = "backend not reachable"
"""An ``undelivered`` attempt's message when the backend could not be reached (exit 4)."""

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
    updated_at TEXT NOT NULL,
    patches TEXT NOT NULL DEFAULT '[]'
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

# What a store of each older version runs to become the next version; the columns it adds
# come last, as in _SCHEMA, so a migrated table and a new one are alike.
_MIGRATIONS = {
    1: "ALTER TABLE attempts ADD COLUMN patches TEXT NOT NULL DEFAULT '[]'",
}

_V1_ATTEMPT_COLUMNS = (
    "id, event_id, operation, status, upstream_repo, upstream_tag, run_ids, run_statuses, "
    "candidate_refs, message, retry_of, deliveries, next_delivery_at, created_at, updated_at"
)
ATTEMPT_COLUMNS = f"{_V1_ATTEMPT_COLUMNS}, patches"
JSON_COLUMNS = ("run_ids", "run_statuses", "candidate_refs", "patches")


class Attempt(msgspec.Struct, kw_only=True, rename="camel"):
    """A maintenance attempt: one delivery of a release event and the outcome of its runs."""

    id: str
    event_id: str
    operation: Operation
    status: Status  # undelivered → started → the worst flow status of its runs
    upstream_repo: str
    upstream_tag: str
    run_ids: list[str] = msgspec.field(default_factory=list)
    run_statuses: dict[str, Status] = msgspec.field(default_factory=dict)
    candidate_refs: list[dict[str, Any]] = msgspec.field(default_factory=list)
    patches: list[dict[str, Any]] = msgspec.field(default_factory=list)  # artifacts.patches
    message: str | None = None
    retry_of: str | None = None
    deliveries: int = 0
    next_delivery_at: str | None = None
    created_at: str
    updated_at: str


def attempt_exit_code(attempt: Attempt) -> int:
    """The exit code a command ends with for ``attempt`` as it was left (docs/statuses.md).

    4 when the backend was not there: ``undelivered`` because it could not be reached, or
    still ``started`` (the backend went away while its runs were followed). Else the code of
    its status; an attempt the backend turned away for now (overloaded, still
    ``undelivered``) is 1, as :func:`~workspace_adapter.base.status.exit_code` makes any
    status that is not an outcome.
    """
    if attempt.status == Status.STARTED or (
        attempt.status == Status.UNDELIVERED and attempt.message == UNREACHABLE
    ):
        return EXIT_BACKEND_UNREACHABLE
    return status_rule.exit_code(attempt.status)


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


def stored_version(db: sqlite3.Connection, path: Path) -> int:
    """The store's schema version: this program's, or an older one it migrates.

    :class:`SchemaVersionError` for a newer version, or a file that holds no schema.
    """
    try:
        return check_version(db, path, "records", SCHEMA_VERSION)
    except SchemaVersionError as exc:
        if exc.found in _MIGRATIONS:
            return exc.found
        raise


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the store to :data:`SCHEMA_VERSION` inside the caller's write transaction.

    Checked under the write lock, so of two processes the second finds it done.
    """
    found = stored_version(db, path)
    for version in range(found, SCHEMA_VERSION):
        db.execute(_MIGRATIONS[version])
    if found != SCHEMA_VERSION:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def attempt_columns(db: sqlite3.Connection, path: Path) -> str:
    """What ``SELECT`` reads as :data:`ATTEMPT_COLUMNS` in ``db``'s transaction.

    A version 1 store that no write has migrated yet has no ``patches`` column: its attempts
    read with none.
    """
    if stored_version(db, path) == 1:
        return f"{_V1_ATTEMPT_COLUMNS}, '[]'"
    return ATTEMPT_COLUMNS


def data_dir(root: Path) -> Path:
    """``$DATA_DIR`` when set (relative to the cwd), else ``<root>/.workspace/data``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser().resolve() if env else root / ".workspace" / "data"


class RecordStore:
    """The DATA_DIR database; :meth:`connect` is one transaction."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / DB_NAME
        self.pid = os.getpid()
        self.marker = process_marker(self.pid)
        self._migrated = False

    def open(self) -> RecordStore:
        """Create the database when missing (under a lock, built aside, renamed into place).

        A store that cannot be opened now (a full disk, a lock held too long) is one line.
        """
        try:
            if self.path.is_file():
                self._check_version()
            else:
                create_atomically(
                    self.path, self.directory / "records.lock", _SCHEMA, SCHEMA_VERSION
                )
        except (sqlite3.Error, OSError) as exc:
            problem = describe_error(exc, "records store", self.path)
            if problem is None:
                raise
            raise UserError(problem, EXIT_FAILED) from exc
        return self

    def _check_version(self) -> None:
        try:
            with self.connect(write=False) as db:
                stored_version(db, self.path)
        except SchemaVersionError as exc:
            raise UserError(f"{exc}, or point DATA_DIR elsewhere") from None

    @contextlib.contextmanager
    def connect(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; writers begin IMMEDIATE so read-then-write decisions are safe.

        The first write through this object migrates an older store, in the same transaction.
        """
        migrating = write and not self._migrated
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous = NORMAL")
            with transaction(db, "BEGIN IMMEDIATE" if write else "BEGIN"):
                if migrating:
                    migrate(db, self.path)
                yield db
            self._migrated = self._migrated or migrating  # committed: a rollback undoes it
        finally:
            db.close()
