"""Below ASGI: how the daemon accepts connections, reads request heads, and gives memory back.

uvicorn leaves three things open that a daemon facing untrusted clients needs closed:

* **Accepting** out of file descriptors: asyncio's accept loop logs a traceback per attempt
  (thousands a second) and uvloop's drops the connection without a word. :class:`Acceptor`
  accepts instead, says so once per interval (:class:`DescriptorShortage`) and waits before it
  tries again; the clients wait in the listen backlog meanwhile.
* **Request heads** have no deadline in uvicorn's h11 protocol: a client sending one byte a
  minute holds its connection forever. :func:`head_deadline_protocol` closes it.
* **Memory** freed after a burst of connections stays in the C heap. :class:`MemoryReturn`
  hands it back (glibc's ``malloc_trim``) once the burst is over.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import socket
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from workspace_adapter import protocol as rpc
from workspace_adapter.base.libc import libc_function
from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.processes import rss_kib

# What the kernel says when a process (or the system) has no descriptor left for a new socket.
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
# Also resources an accept can run out of; treated alike when accepting.
_ACCEPT_SHORTAGES = OUT_OF_DESCRIPTORS | {errno.ENOBUFS, errno.ENOMEM}
# Connections taken per wake-up of the listening socket, before the loop does anything else.
ACCEPT_BATCH = 128


class DescriptorShortage:
    """Counts what ran out of file descriptors and logs it at most once per ``interval``."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.total = 0
        self._since_logged = 0
        self._logged_at = -interval
        self._log = get_logger(component="backend")

    def noticed(self, where: str, exc: OSError) -> None:
        self.total += 1
        self._since_logged += 1
        now = time.monotonic()
        if now - self._logged_at >= self.interval:
            self._log.warning(
                "backend.out_of_descriptors",
                where=where,
                problem=exc.strerror or str(exc),
                times=self._since_logged,
                fix="raise the daemon's open-files limit (ulimit -n, LimitNOFILE=)",
            )
            self._logged_at, self._since_logged = now, 0

    def fault(self, exc: BaseException) -> rpc.RpcFault | None:
        """The retryable -32001 for a request that ran out of descriptors; None for others."""
        if not isinstance(exc, OSError) or exc.errno not in OUT_OF_DESCRIPTORS:
            return None
        self.noticed("request", exc)
        return rpc.RpcFault(
            rpc.OVERLOADED,
            "overloaded: the backend is out of file descriptors; retry later",
            data={"reason": "out_of_descriptors", "retryAfter": 1},
        )


# One per process: what the operator reads is the process running out, whoever noticed it.
descriptors = DescriptorShortage()


class Acceptor:
    """Accepts connections on ``listener`` and hands each to a protocol from ``factory``.

    Out of descriptors it stops watching the socket for ``backoff`` seconds instead of trying
    again at once; the shortage is logged through :data:`descriptors`.
    """

    def __init__(
        self,
        listener: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        *,
        backoff: float = 0.5,
    ) -> None:
        self.listener = listener
        self.factory = factory
        self.backoff = backoff
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._watching = False
        # Connections being handed to their protocol (a task each, kept until done).
        self._opening: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.listener.setblocking(False)
        self._watch()

    def stop(self) -> None:
        """Stop accepting (the socket stays open; its owner closes it)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._watching and self._loop is not None:
            self._loop.remove_reader(self.listener.fileno())
        self._watching = False

    def _watch(self) -> None:
        assert self._loop is not None
        self._retry = None
        self._loop.add_reader(self.listener.fileno(), self._accept)
        self._watching = True

    def _accept(self) -> None:
        assert self._loop is not None
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _ACCEPT_SHORTAGES:
                    raise  # the loop logs it; the socket itself broke
                descriptors.noticed("accept", exc)
                self.stop()
                self._retry = self._loop.call_later(self.backoff, self._watch)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._open(conn))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open(self, conn: socket.socket) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(self.factory, conn)
        except OSError:
            conn.close()  # the client left before its protocol started


def head_deadline_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request head takes over ``seconds``.

    The clock starts when the connection opens, and again when the first bytes of a later
    request on a kept-alive one arrive; it stops once the head is read (the body has a
    deadline of its own, in the routes, and an upgraded WebSocket has pings).
    """

    class HeadDeadlineProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._head_timer = self.loop.call_later(seconds, self._head_too_slow)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._stop_head_clock()
            elif self._head_timer is None and not self.transport.is_closing():
                self._head_timer = self.loop.call_later(seconds, self._head_too_slow)

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_clock()
            super().connection_lost(exc)

        def _stop_head_clock(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeadDeadlineProtocol


class MemoryReturn:
    """Gives the C heap's free pages back to the system once a burst of work is over.

    Python frees the objects of a connection as it closes (a session holds no reference
    cycle), but glibc keeps the freed pages in its heaps for reuse. After ``burst`` connections
    closed (or one large reply went out), ``quiet`` seconds with nothing more of either trim
    the heaps on a worker thread (a few milliseconds). What Python's own allocator keeps in
    arenas that a survivor pins stays: docs/operations.md says how to trade it away.
    """

    def __init__(self, *, burst: int = 64, quiet: float = 1.0) -> None:
        self.burst = burst
        self.quiet = quiet
        self.trims = 0
        self._trim: Callable[[int], int] | None = libc_function("malloc_trim")  # glibc only
        self._pending = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_closed(self) -> None:
        self._note(1)

    def large_reply_sent(self) -> None:
        self._note(self.burst)

    def _note(self, weight: int) -> None:
        if self._trim is None:
            return
        self._pending += weight
        if self._pending < self.burst:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.quiet, self._start_trim, loop)

    def _start_trim(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._pending = None, 0
        self.trims += 1
        started = time.perf_counter()
        # A full collection also empties Python's free lists (thousands of tuples, dicts,
        # contexts kept for reuse), whose last members pin whole arenas. On the loop, where
        # the objects live: their finalizers must not run on another thread. Fast, since the
        # daemon froze what it had at start (see :func:`freeze_startup_objects`).
        gc.collect()
        collect_ms = (time.perf_counter() - started) * 1000
        loop.run_in_executor(None, self._trim_now, collect_ms)

    def _trim_now(self, collect_ms: float) -> None:
        assert self._trim is not None
        before, started = rss_kib(), time.perf_counter()
        self._trim(0)
        get_logger(component="backend").debug(
            "backend.memory_returned",
            rss_kib_before=before,
            rss_kib_after=rss_kib(),
            collect_ms=round(collect_ms, 1),
            trim_ms=round((time.perf_counter() - started) * 1000, 1),
        )


def freeze_startup_objects() -> None:
    """Leave what the daemon built at start (modules, classes, its services) out of every later
    collection: they live as long as the process, and a collection then walks only the rest."""
    gc.collect()
    gc.freeze()
