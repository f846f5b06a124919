"""``workspace prune [--older-than 30d] [--dry-run] [--json] [--vacuum] [--data-dir DIR]``.

Drops what finished before the cutoff (now minus ``--older-than``, ``^\\d+[smhd]$``, default
``30d``) from the three stores, each in one short transaction of its own, and only from the
stores that exist (none is ever created):

* **state** (``.workspace/<mode>/state.sqlite3``, the ``--mode`` in use): finished run records
  started before the cutoff, with their output tails. Never a ``running`` record, never each
  task's newest run and newest finished run (doctor's "last run", ``workspace runs``), never the
  schedule rows (tick's last slots: without them a task would start over from a baseline).
* **backend** (``--data-dir``, else ``$CODEX_FLOW_BACKEND_DATA_DIR``, else
  ``.workspace/backend``): events received before the cutoff whose runs (replays included) are
  all ``completed``, ``failed`` or ``canceled`` and ended before the cutoff, together with those
  runs and their output. A queued or running run and its event stay. Safe while the daemon
  runs: SQLite WAL, one ``BEGIN IMMEDIATE`` transaction that waits up to 5 s for the daemon's
  write lock; a store still locked after that is a one-line error, exit 1, with nothing of that
  store deleted. **A pruned event id is unknown to the backend again**: dispatching the same id
  once more is ``accepted`` and runs again instead of being a ``duplicate``, and ``workspace
  replay`` / ``flow.getEvent`` no longer find it. Release events of the service path are kept
  from being dispatched twice by the records below, not by the backend.
* **records** (``$DATA_DIR``, else ``.workspace/data``): the delivery log (``dispatches`` rows)
  of attempts that ended (not ``undelivered`` or ``started``), logged before the cutoff, and
  flow events created before the cutoff that no attempt delivers. Kept: the attempts, the seen
  entries and the source cursors (they are what stops a release from being dispatched twice)
  and each attempt's own event. That last one departs from "drop old flow events" on purpose:
  once the backend pruned an event, ``workspace attempts retry`` can only redeliver it from the
  records, and the row is a few hundred bytes per release, so dropping it would save nothing
  and make old attempts impossible to retry.

``--dry-run`` opens each store read-only and counts what would go. Human output is one line per
store (missing stores say so); ``--json`` prints one document::

    {"cutoff": "2026-10-27T23:19:53.000Z", "dryRun": false, "olderThan": "30d",
     "stores": [{"store": "backend", "path": ".../backend.sqlite", "status": "pruned",
                 "deleted": {"events": 12, "runs": 15}}, ...]}

``status`` is ``pruned``, ``dry-run``, ``missing`` (``deleted`` empty) or ``error`` (with
``error``, the same line as on stderr). After deleting, a ``wal_checkpoint(TRUNCATE)`` is tried
without waiting (a busy store keeps its WAL until its own next checkpoint). Freed pages are
reused, so the files do not shrink; ``--vacuum`` rewrites them smaller but holds each store's
write lock while it runs, so it is refused while a backend runs on the data dir (stop it first,
pruning alone does not need that). Exit 0, or 1 when a store could not be pruned.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from workspace_adapter.base.display import cell
from workspace_adapter.base.errors import EXIT_BAD_INPUT, EXIT_FAILED, UserError
from workspace_adapter.base.sqlitefile import SchemaVersionError, classify, describe
from workspace_adapter.base.times import iso, utc_now
from workspace_adapter.local.config import duration_seconds

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals

Prune = Callable[[str, bool, float], dict[str, int]]


def parse_age(text: str) -> dt.timedelta:
    """``30d`` → 30 days; anything but ``^\\d+[smhd]$`` is a bad ``--older-than``."""
    try:
        return dt.timedelta(seconds=duration_seconds(text))
    except ValueError:
        raise UserError(
            f"--older-than: {text!r} is not an age like 30d (a number, then s, m, h or d)",
            EXIT_BAD_INPUT,
        ) from None
    except OverflowError:
        raise UserError(f"--older-than: {text!r} is too long ago", EXIT_BAD_INPUT) from None


def backend_data_dir(root: Path, flag: str | None) -> Path:
    """Like ``workspace backend``: ``--data-dir``, then its env variable, then the default."""
    given = flag or os.environ.get("CODEX_FLOW_BACKEND_DATA_DIR")
    return Path(given).expanduser().resolve() if given else root / ".workspace" / "backend"


def _backend_running(data_dir: Path) -> bool:
    """Whether a daemon holds its data dir (checked, not kept: it must be able to start).

    The daemon locks the folder itself and ``backend.lock`` in it; either one held means it
    runs, even after someone deleted ``backend.lock``.
    """
    if not data_dir.is_dir():
        return False
    folder = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for path in (None, data_dir / "backend.lock"):
            if path is not None and not path.is_file():
                continue
            with contextlib.ExitStack() as stack:
                fd = folder if path is None else stack.enter_context(open(path, "a+")).fileno()
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(folder)
    return False


def _problem(store: str, path: Path, exc: Exception) -> str:
    if isinstance(exc, UserError):
        return exc.message
    if not isinstance(exc, sqlite3.Error):  # a schema this program does not know
        return f"{store} store {exc}"
    failure = classify(exc, path)
    if failure is not None:
        return describe(failure, f"{store} store", path, exc, undone="nothing deleted")
    return f"{store} store {path}: {exc}"


def _checkpoint(path: Path, vacuum: bool, busy_timeout: float) -> None:
    """Shrink the WAL (best effort, no waiting); with ``vacuum``, rewrite the file first."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None)
    try:
        if vacuum:
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            db.execute("VACUUM")
        db.execute("PRAGMA busy_timeout = 0")
        # A reader or writer is active: SQLite checkpoints later by itself.
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        db.close()


def prune(
    g: Globals,
    *,
    older_than: str = "30d",
    dry_run: bool = False,
    as_json: bool = False,
    vacuum: bool = False,
    data_dir: str | None = None,
    busy_timeout: float = 5.0,
) -> int:
    """Prune the state, backend and records stores; exit 0, or 1 when one could not be."""
    from workspace_adapter.backend.store import DB_NAME, BackendStore
    from workspace_adapter.local.state import StateStore
    from workspace_adapter.service.records import Records

    age = parse_age(older_than)
    try:
        cutoff = iso(utc_now() - age)
    except OverflowError:
        raise UserError(f"--older-than: {older_than!r} is too long ago", EXIT_BAD_INPUT) from None
    backend_dir = backend_data_dir(g.workspace_root, data_dir)
    if vacuum and not dry_run and _backend_running(backend_dir):
        raise UserError(
            f"--vacuum: a backend is running on {backend_dir}; stop it first "
            "(prune without --vacuum is safe while it runs)",
            EXIT_FAILED,
        )
    state = StateStore.for_workspace(g.workspace_root, g.mode)
    records = Records.for_workspace(g.workspace_root)

    def state_prune(cut: str, dry: bool, wait: float) -> dict[str, int]:
        return {"runs": state.prune(cut, dry_run=dry, busy_timeout=wait)}

    def backend_prune(cut: str, dry: bool, wait: float) -> dict[str, int]:
        return BackendStore.prune(backend_dir, cut, dry_run=dry, busy_timeout=wait)

    def records_prune(cut: str, dry: bool, wait: float) -> dict[str, int]:
        return records.prune(cut, dry_run=dry, busy_timeout=wait)

    stores: list[tuple[str, Path, Prune]] = [
        ("state", state.path, state_prune),
        ("backend", backend_dir / DB_NAME, backend_prune),
        ("records", records.path, records_prune),
    ]
    report: list[dict[str, Any]] = []
    failed = False
    if not as_json:
        would = "would drop" if dry_run else "dropping"
        print(f"{would} what ended before {cutoff} (--older-than {older_than})")
    for name, path, run_prune in stores:
        entry: dict[str, Any] = {"store": name, "path": str(path), "deleted": {}}
        report.append(entry)
        if not path.is_file():
            entry["status"] = "missing"
        else:
            try:
                entry["deleted"] = run_prune(cutoff, dry_run, busy_timeout)
                entry["status"] = "dry-run" if dry_run else "pruned"
            except (sqlite3.Error, UserError, SchemaVersionError) as exc:
                entry["status"], entry["error"] = "error", _problem(name, path, exc)
                failed = True
                print(f"error: {cell(entry['error'])}", file=sys.stderr)
        if entry["status"] == "pruned" and (vacuum or any(entry["deleted"].values())):
            try:
                _checkpoint(path, vacuum, busy_timeout)
            except sqlite3.Error as exc:
                entry["status"], entry["error"] = "error", f"{name} store {path}: VACUUM: {exc}"
                failed = True
                print(f"error: {cell(entry['error'])} (the deletions are kept)", file=sys.stderr)
            else:
                entry["vacuumed"] = vacuum
        if not as_json:
            print(_line(entry))
    if as_json:
        document = {"cutoff": cutoff, "dryRun": dry_run, "olderThan": older_than, "stores": report}
        sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
    return EXIT_FAILED if failed else 0


def _line(entry: dict[str, Any]) -> str:
    """``backend  /w/.workspace/backend/backend.sqlite: deleted 12 events, 15 runs``."""
    head = f"{entry['store']:<8} {entry['path']}:"
    status = entry["status"]
    if status == "missing":
        return f"{head} no store, skipped"
    counts = ", ".join(f"{n} {what}" for what, n in entry["deleted"].items())
    if status == "error":
        return f"{head} deleted {counts}, not vacuumed" if counts else f"{head} not pruned"
    verb = "would delete" if status == "dry-run" else "deleted"
    return f"{head} {verb} {counts}" + (", vacuumed" if entry.get("vacuumed") else "")
