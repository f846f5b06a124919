"""The rules every SQLite store here follows: creation, transactions, versions, failures.

A store is never left half-built. The stores that many commands may create at once (the local
state, the service path's records) use pre-commit's :func:`create_atomically`: take an
exclusive file lock, check again (another process may have won while we waited), build the
schema in a temp file, and rename it into place. The backend store, opened by its daemon
alone, builds its schema in place inside one ``BEGIN IMMEDIATE`` transaction instead
(``check_version(..., empty_ok=True)``): SQLite makes that all or nothing too, and a file a
failed first start left empty (version 0) is completed by the next start, where a rename
scheme would have to refuse it or delete it.

Every store records its schema in ``PRAGMA user_version`` and refuses a file of another
version (:func:`check_version`); every store reads an :class:`sqlite3.Error` the same way
(:func:`classify`) and words it the same way (:func:`describe`): busy and full are retryable
and say so, a file that is not a database is the operator's to move aside, never ours to
repair.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Literal


def create_atomically(path: Path, lock_path: Path, schema: str, version: int) -> bool:
    """Create ``path`` in WAL mode with ``schema`` at ``user_version``; False if it existed.

    Whatever fails (a full disk, most likely) leaves no temp file behind: the next attempt, or
    the operator looking at the folder, finds the store either whole or absent.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return False
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        _remove_database(tmp)
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.executescript(schema)
                db.execute(f"PRAGMA user_version = {version}")
                db.execute("PRAGMA journal_mode = WAL")
            finally:
                db.close()
            os.replace(tmp, path)
        except BaseException:
            _remove_database(tmp)
            raise
        return True


def _remove_database(path: Path) -> None:
    """Remove ``path`` and the journal files SQLite may have left beside it."""
    for name in (path.name, f"{path.name}-journal", f"{path.name}-wal", f"{path.name}-shm"):
        with contextlib.suppress(OSError):
            path.with_name(name).unlink(missing_ok=True)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """One transaction on ``db`` (autocommit mode): committed at the end, rolled back on error."""
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        rollback_if_open(db)
        raise


def rollback_if_open(db: sqlite3.Connection) -> None:
    """Roll back the transaction open on ``db``, if SQLite has not already done so.

    For a writer that must begin its transaction itself (:func:`transaction` would hide why
    ``BEGIN`` failed) and still ends a failed one as :func:`transaction` does.
    """
    # SQLITE_FULL (and a few other errors) roll the transaction back by themselves; a second
    # ROLLBACK would fail and hide the real error.
    if db.in_transaction:
        db.execute("ROLLBACK")


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection for doctor, which must never write (not even a -wal file).

    Even ``mode=ro`` creates the -wal and -shm files of a WAL database when they are missing
    and leaves them behind. They are missing exactly when no writer has the database open, and
    then the main file holds everything (the last writer checkpointed it), so it is read as
    ``immutable``; while a writer is active the files exist and ``mode=ro`` creates nothing.
    """
    uri = path.resolve().as_uri()
    wal = path.with_name(path.name + "-wal")
    query = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    return sqlite3.connect(f"{uri}?{query}", uri=True, timeout=5)


class SchemaVersionError(Exception):
    """A store file written with another schema version than this program reads."""

    def __init__(self, path: Path, what: str, found: int, expected: int) -> None:
        advice = (
            "upgrade workspace-adapter"
            if found > expected
            else "move it aside (its history stays readable by the version that wrote it)"
        )
        super().__init__(
            f"{path}: {what} schema version {found}, this program reads {expected}; {advice}"
        )
        self.path, self.found, self.expected = path, found, expected


def check_version(
    db: sqlite3.Connection, path: Path, what: str, expected: int, *, empty_ok: bool = False
) -> int:
    """The file's schema version; :class:`SchemaVersionError` unless it is ``expected``.

    ``empty_ok`` also accepts 0, a file that holds no schema yet (the caller then creates it,
    inside the same transaction).
    """
    (found,) = db.execute("PRAGMA user_version").fetchone()
    if found != expected and not (empty_ok and found == 0):
        raise SchemaVersionError(path, what, int(found), expected)
    return int(found)


Failure = Literal["busy", "full", "unreadable"]

# Less room than this on the file system behind an I/O error means the disk is full: SQLite
# says SQLITE_FULL only when a write to the database or journal fails; growing the -shm file,
# or creating a file on a disk with no inodes left, fails as an I/O or cannot-open error.
_NEARLY_FULL_BYTES = 1024 * 1024
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def classify(exc: sqlite3.Error | OSError, path: Path | None = None) -> Failure | None:
    """What an SQLite (or file system) error means for the operator, or None for any other.

    ``busy``: another process holds the lock (retry); ``full``: no disk space left (free
    some); ``unreadable``: the file is not a database of ours (move it aside). With the
    store's ``path``, an I/O error on a file system that has no room left is ``full`` too.
    """
    if isinstance(exc, OSError):
        return "full" if exc.errno in _NO_SPACE else None
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return "busy"
    if code == sqlite3.SQLITE_FULL:
        return "full"
    if code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN) and path is not None:
        return "full" if _disk_full(path) else None
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT) or (
        code == sqlite3.SQLITE_ERROR and "no such table" in str(exc)
    ):
        return "unreadable"
    return None


def _disk_full(path: Path) -> bool:
    """Whether the file system holding ``path`` (or its nearest existing folder) is full."""
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        st = os.statvfs(where)
    except OSError:
        return False
    no_inodes = st.f_files > 0 and st.f_favail == 0
    return no_inodes or st.f_bavail * st.f_frsize < _NEARLY_FULL_BYTES


def describe(
    failure: Failure,
    what: str,
    path: Path | None = None,
    exc: sqlite3.Error | OSError | None = None,
    *,
    undone: str = "",
) -> str:
    """The one wording of ``failure`` of the ``what`` store: one line saying what to do.

    With ``path``, a command's line to its operator: it names the file and the cause ``exc``,
    and ``undone`` (``"nothing deleted"``) says what the failed command did not do. Without,
    the daemon's short answer to a client, which is not told where the store lives.
    """
    cause = "" if exc is None else _cause(exc)
    if path is None:
        if failure == "busy":
            return f"{what} busy (locked by another process); retry"
        if failure == "full":
            return f"{what} is full ({cause or 'SQLITE_FULL'}): free disk space"
        return f"{what} is not a readable {what}; move it aside to start a new history"
    then = f"{undone}, " if undone else ""
    if failure == "busy":
        return f"{what} {path} is locked by another process; {then}retry"
    if failure == "full":
        return f"{what} {path}: the disk is full ({cause}); {then}free disk space and retry"
    return (
        f"{what} {path} is not a readable {what} ({exc}); "
        f"{then}move it aside to start a new history"
    )


def _cause(exc: sqlite3.Error | OSError) -> str:
    """SQLite's or the OS's name for what went wrong (``SQLITE_FULL``, ``No space left...``)."""
    name = exc.strerror if isinstance(exc, OSError) else exc.sqlite_errorname
    return name or str(exc)


def describe_error(exc: sqlite3.Error | OSError, what: str, path: Path) -> str | None:
    """:func:`describe` for whatever ``exc`` means to the ``what`` store at ``path``, or None
    when it is no failure of ours to name (the caller lets it through: a bug, with its trail)."""
    failure = classify(exc, path)
    return None if failure is None else describe(failure, what, path, exc)


class StoreUnavailable(Exception):
    """A write the store cannot take now; nothing of it was stored, so a retry is safe.

    ``reason`` is ``busy`` (locked by another process past the busy timeout) or ``full``
    (SQLITE_FULL: no disk space left).
    """

    def __init__(self, reason: Failure, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def unavailable(exc: sqlite3.Error, what: str = "store") -> StoreUnavailable | None:
    """The :class:`StoreUnavailable` that ``exc`` means (busy or full), else None."""
    failure = classify(exc)
    if failure is None or failure == "unreadable":
        return None
    return StoreUnavailable(failure, describe(failure, what, exc=exc))
