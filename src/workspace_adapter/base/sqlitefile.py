"""Creating a SQLite store so that a crash or a race never leaves half a database.

pre-commit's store does the same: take an exclusive file lock, check again (another process
may have won while we waited), build the schema in a temp file, and rename it into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


def create_atomically(path: Path, lock_path: Path, schema: str, version: int) -> bool:
    """Create ``path`` in WAL mode with ``schema`` at ``user_version``; False if it existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return False
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.executescript(schema)
            db.execute(f"PRAGMA user_version = {version}")
            db.execute("PRAGMA journal_mode = WAL")
        finally:
            db.close()
        os.replace(tmp, path)
        return True


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """One transaction on ``db`` (autocommit mode): committed at the end, rolled back on error."""
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # SQLITE_FULL rolls the transaction back by itself; a second ROLLBACK would fail and
        # hide the real error.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


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
