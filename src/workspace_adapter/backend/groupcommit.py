"""The daemon's writes to the store: group commits on one dedicated thread, never on the loop,
and WAL checkpoints on another beside it.

Another process may hold the database locked for seconds, and ``BEGIN IMMEDIATE`` waits that
out; the event loop must not. A write that the store cannot take now (locked, or the disk is
full) raises :class:`StoreUnavailable`, and nothing of it was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

import anyio

from workspace_adapter.backend import mutations
from workspace_adapter.backend.mutations import WriteOp
from workspace_adapter.backend.records import DispatchRecord, FlowRun
from workspace_adapter.base.sqlitefile import unavailable

# Writes committed together at most; bounds how long one transaction holds the write lock.
MAX_BATCH = 256


class BatchCommitter(Protocol):
    """What the writer needs of the store: commit a batch of queued writes together."""

    def commit_batch(self, batch: list[QueuedWrite]) -> None: ...

    def commit_now(self, op: WriteOp) -> tuple[bool, Any]: ...


class QueuedWrite:
    """One write waiting for (or done with) its group commit."""

    __slots__ = ("error", "op", "result")

    def __init__(self, op: WriteOp) -> None:
        self.op = op
        self.result: Any = None
        self.error: BaseException | None = None


def _by_loop(
    batch: list[tuple[QueuedWrite, asyncio.Future[None]]],
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

    def __init__(self, store: BatchCommitter) -> None:
        self.store = store
        self._requests: queue.SimpleQueue[tuple[QueuedWrite, asyncio.Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Writes queued and not yet answered; counted on the loop's thread only.
        self._pending = 0

    async def write(self, op: WriteOp) -> Any:
        """Run ``op`` in the next group commit; its result once committed."""
        if self._pending == 0:
            # Nothing queued before it: commit at once if the lock is free (a short
            # transaction, no waiting), which spares an idle daemon the thread hand-off.
            try:
                done, result = self.store.commit_now(op)
            except sqlite3.Error as exc:
                problem = unavailable(exc)
                if problem is not None:
                    raise problem from exc
                raise
            if done:
                return result
        write = QueuedWrite(op)
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._thread is None:
            self._start()
        self._pending += 1
        try:
            self._requests.put((write, committed))
            with anyio.CancelScope(shield=True):
                await committed
        finally:
            self._pending -= 1
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
            queued = [write for write, _ in batch]
            try:
                self.store.commit_batch(queued)
            except Exception as exc:  # commit_batch answers every write; this is a last resort
                for write in queued:
                    if write.error is None:
                        write.error = exc
            for loop, futures in _by_loop(batch).items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_wake, futures)

    async def dispatch(self, event: dict[str, Any], runs: list[FlowRun]) -> DispatchRecord:
        """:meth:`BackendStore.dispatch`, group-committed."""
        record: DispatchRecord = await self.write(lambda db: mutations.store_event(db, event, runs))
        return record

    async def add_runs(self, runs: list[FlowRun]) -> None:
        """:meth:`BackendStore.add_runs`, group-committed."""
        await self.write(lambda db: mutations.insert_runs(db, runs))

    async def mark_running(self, run_id: str) -> FlowRun | None:
        """:meth:`BackendStore.mark_running`, group-committed."""
        run: FlowRun | None = await self.write(lambda db: mutations.mark_running(db, run_id))
        return run

    async def finish_run(self, run_id: str, **fields: Any) -> FlowRun | None:
        """:meth:`BackendStore.finish_run`, group-committed."""
        run: FlowRun | None = await self.write(
            lambda db: mutations.finish_run(db, run_id, **fields)
        )
        return run


class WalCheckpointer:
    """Passive WAL checkpoints of the store, on a thread and a connection of their own.

    SQLite checkpoints by itself inside the commit that takes the WAL past 1,000 pages, on the
    store's writer thread: every dispatch queued behind that commit waited ~20 ms for it (the
    dispatch p99). Checkpointing every ``every`` dispatches beside the writer keeps the WAL
    short of that mark; SQLite's own checkpoint stays the backstop.
    """

    def __init__(self, path: Path, every: int = 128) -> None:
        self.path = path
        self.every = every
        self._writes = 0
        self._due = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name="backend-wal-checkpoint", daemon=True
        )
        self._thread.start()

    def wrote(self) -> None:
        """Count one committed write (on the event loop); cheap."""
        self._writes += 1
        if self._writes >= self.every:
            self._writes = 0
            self._due.set()

    def stop(self) -> None:
        self._stopping = True
        self._due.set()
        self._thread.join()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout = 0")  # never wait: the next turn tries again
            while True:
                self._due.wait()
                self._due.clear()
                if self._stopping:
                    return
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.close()
