"""The backend daemon's life: one port, starlette for HTTP, WebSocket JSON-RPC, uvicorn under it.

Everything a frame means is decided by :mod:`workspace_adapter.protocol` and
:class:`BackendService`; each connection's frames are read and written by
:mod:`~workspace_adapter.backend.session`. This module runs the process: bind, print the URL,
recover the store, serve, and on SIGINT/SIGTERM stop accepting, cancel the running steps, and
exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import msgspec
import uvicorn
from starlette.applications import Starlette

from workspace_adapter.backend.appserver import AppServerLink
from workspace_adapter.backend.groupcommit import WalCheckpointer
from workspace_adapter.backend.http import Guard, build_routes
from workspace_adapter.backend.runqueue import RunQueue
from workspace_adapter.backend.service import BackendService
from workspace_adapter.backend.session import WebSocketsFirst
from workspace_adapter.backend.store import BackendStore
from workspace_adapter.backend.subscriptions import SubscriptionHub
from workspace_adapter.backend.transport import (
    Acceptor,
    MemoryReturn,
    freeze_startup_objects,
    head_deadline_protocol,
)
from workspace_adapter.base.errors import UserError
from workspace_adapter.base.hosts import is_loopback
from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.paths import DEFAULT_BACKEND_HOST, DEFAULT_BACKEND_PORT
from workspace_adapter.base.sqlitefile import SchemaVersionError, unavailable
from workspace_adapter.events import MAX_FRAME_BYTES
from workspace_adapter.flows.catalog import FlowCatalog
from workspace_adapter.flows.executor import LocalExecutor, StepExecutor

# How long a client may take to send a request's head, and then its body.
READ_TIMEOUT = 10.0
# Where the secret and token may come from; never handed to a step, even when asked to.
SECRET_ENV_NAMES = ("CODEX_FLOW_BACKEND_SECRET", "CODEX_WORKSPACE_BACKEND_TOKEN")


class BackendOptions(msgspec.Struct, kw_only=True):
    """How to run the daemon; secrets are read from files or env by the command."""

    host: str = DEFAULT_BACKEND_HOST
    port: int = DEFAULT_BACKEND_PORT
    cwd: Path
    data_dir: Path
    token: str | None = None
    secret: str | None = None
    allowed_origins: tuple[str, ...] = ()
    # Names clients may reach the daemon by besides the loopback ones (the Host header).
    public_hosts: tuple[str, ...] = ()
    concurrency: int = 2
    env_allow: tuple[str, ...] = ()
    # The Codex app-server behind appServer.* (ws://…); None: those methods are unknown.
    app_server_url: str | None = None
    # Seconds a client may take to send a request's head, and again its body.
    read_timeout: float = READ_TIMEOUT
    # Where steps run: "local" (subprocesses of the daemon) or "celery" (workers over broker).
    executor: str = "local"
    broker: str | None = None


def build_app(
    service: BackendService,
    options: BackendOptions,
    ready: Any,
    memory: MemoryReturn | None = None,
) -> Guard:
    """The ASGI app: HTTP routes, a WebSocket on every path, behind the guard."""
    routes: list[Any] = build_routes(
        service,
        secret=options.secret,
        ready=ready,
        token=options.token,
        body_timeout=options.read_timeout,
    )
    return Guard(
        WebSocketsFirst(Starlette(routes=routes), service, memory or MemoryReturn()),
        token=options.token,
        secret=options.secret,
        allowed_origins=frozenset(options.allowed_origins),
        public_hosts=frozenset(options.public_hosts),
    )


class _Server(uvicorn.Server):
    """uvicorn's server, accepting on ``listener`` through an :class:`Acceptor` of ours."""

    def __init__(self, config: uvicorn.Config, listener: socket.socket) -> None:
        super().__init__(config)
        self.listener = listener
        self.acceptor: Acceptor | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals are ours: shutting down means cancelling steps, not only closing sockets,
        # and uvicorn would re-raise them afterwards, turning exit 0 into death by SIGTERM.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # uvicorn listens on nothing: the acceptor does
        if self.started:
            self.acceptor = Acceptor(self.listener, self._protocol)
            self.acceptor.start()

    def _protocol(self) -> asyncio.Protocol:
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.acceptor is not None:
            self.acceptor.stop()
        await super().shutdown(sockets=[])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    """One daemon per data dir, for as long as it runs.

    The lock is on the folder itself, which cannot be deleted while it holds the store: a lock
    on ``backend.lock`` alone was lost when someone deleted the file, and a second daemon then
    opened the same store. ``backend.lock`` is still locked too, for tools that look at it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    folder = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with open(data_dir / "backend.lock", "a+") as handle:
            for held in (folder, handle.fileno()):
                try:
                    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise UserError(f"another backend is already using {data_dir}") from None
            yield
    finally:
        os.close(folder)


def check_options(options: BackendOptions) -> None:
    """Refuse a daemon that must not start (docs/api.md) before anything is bound."""
    if not is_loopback(options.host) and not options.token:
        raise UserError(
            f"refusing to listen on non-loopback address {options.host} without a token; "
            "set CODEX_WORKSPACE_BACKEND_TOKEN or --token-file"
        )
    if not is_loopback(options.host) and not options.public_hosts:
        raise UserError(
            f"--host {options.host} is not loopback: name the host clients reach it by with "
            "--public-host NAME (repeatable), or CODEX_WORKSPACE_BACKEND_PUBLIC_HOST"
        )
    passed_on = sorted(set(options.env_allow) & set(SECRET_ENV_NAMES))
    if passed_on:
        raise UserError(
            f"--env-allow {passed_on[0]}: the backend's secret and token are never passed to steps"
        )
    if options.concurrency < 1:
        raise UserError(f"--concurrency must be at least 1, got {options.concurrency}")
    if not options.read_timeout > 0:
        raise UserError(f"the read timeout must be above 0 seconds, got {options.read_timeout}")
    if not options.cwd.is_dir():
        raise UserError(f"--cwd {options.cwd} is not a folder")


def _use_pidfd_child_watcher() -> None:
    # Python 3.11's default child watcher starts a thread per subprocess to wait for it; a
    # pidfd lets the event loop itself notice the exit (3.12+ does this on its own). uvloop
    # watches its children itself.
    loop = asyncio.get_running_loop()
    if type(loop).__module__.startswith("uvloop"):
        return
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        with contextlib.suppress(OSError, NotImplementedError):
            os.close(os.pidfd_open(os.getpid()))
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(loop)
            asyncio.get_event_loop_policy().set_child_watcher(watcher)


class Companion(Protocol):
    """Work that shares the daemon's process and stops before it (``workspace serve``'s loops).

    The daemon starts :meth:`run` once it listens and cancels it when it stops. On SIGINT/SIGTERM
    it cancels :meth:`run`, then awaits :meth:`wind_down` before it stops accepting and cancels
    its steps; once those ended it awaits :meth:`reap`.
    """

    async def run(self) -> None:
        """Alongside the server, until cancelled."""

    async def wind_down(self) -> None:
        """After :meth:`run` was cancelled on a signal: give work already started its grace."""

    async def reap(self) -> None:
        """After the backend cancelled its steps: end whatever the companion left running."""


# Builds the companion for the URL the daemon listens on (known only once bound: ``--port 0``)
# and the service the daemon runs (``serve`` hands its flow tasks to it in-process).
CompanionFactory = Callable[[str, BackendService], Companion]


async def serve_backend(
    options: BackendOptions,
    executor: StepExecutor | None = None,
    *,
    companion: CompanionFactory | None = None,
) -> int:
    """Run the daemon (and ``companion``, if any) until SIGINT/SIGTERM; returns the exit code."""
    check_options(options)
    _use_pidfd_child_watcher()
    log = get_logger(component="backend")
    with _data_dir_lock(options.data_dir):
        sock = _bind(options.host, options.port)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"ws://{shown}:{bound_port}"
        try:
            store = BackendStore(options.data_dir)
        except (SchemaVersionError, OSError, sqlite3.Error) as exc:
            sock.close()
            raise UserError(f"cannot open the store in {options.data_dir}: {_why(exc)}") from None
        try:
            left_running, queued = store.recover()
        except sqlite3.Error as exc:
            store.close()
            sock.close()
            raise UserError(
                f"cannot recover the store in {options.data_dir}: {_why(exc)}"
            ) from None
        hub = SubscriptionHub()
        catalog = FlowCatalog(options.cwd)
        queue = RunQueue(
            store=store,
            steps=catalog,
            executor=executor or _executor(options),
            hub=hub,
            workspace_root=options.cwd,
            backend_url=url,
            concurrency=options.concurrency,
            env_allow=options.env_allow,
        )
        checkpoints = WalCheckpointer(store.path)
        app_server = (
            AppServerLink(options.app_server_url, hub.broadcast) if options.app_server_url else None
        )
        service = BackendService(
            store=store,
            catalog=catalog,
            queue=queue,
            hub=hub,
            on_write=checkpoints.wrote,
            app_server=app_server,
        )
        app = build_app(service, options, ready=lambda: queue.accepting, memory=MemoryReturn())
        config = uvicorn.Config(
            app,
            http=head_deadline_protocol(options.read_timeout),
            ws="websockets-sansio",
            ws_max_size=MAX_FRAME_BYTES,
            ws_per_message_deflate=False,
            lifespan="off",
            log_config=None,
            access_log=True,  # one line per HTTP request at info, through base.logs
            timeout_graceful_shutdown=3,
        )
        server = _Server(config, sock)
        try:
            sidecar = companion(url, service) if companion is not None else None
            alongside = anyio.CancelScope()
            async with anyio.create_task_group() as tg:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    queue.take_up(left_running)
                    await tg.start(queue.serve)
                    queue.submit(queued)
                    if app_server is not None:
                        # In the background: an app-server that is down does not stop flows.
                        tg.start_soon(app_server.run)
                    log.info(
                        "backend.started",
                        url=url,
                        pid=os.getpid(),
                        recovered_running=len(left_running),
                        recovered_queued=len(queued),
                    )
                    freeze_startup_objects()
                    print(f"workspace backend listening on {url}", flush=True)
                    if sidecar is not None:
                        # The socket already listens, so a companion that connects before
                        # uvicorn starts accepting waits in the backlog instead of failing.
                        tg.start_soon(_run_alongside, alongside, sidecar)
                    tg.start_soon(_stop_on_signal, signals, server, queue, alongside, sidecar)
                    await server.serve()
                    # The server stopped (a signal, or uvicorn gave up): finish the runs' story.
                    alongside.cancel()
                    await queue.shutdown()
                    if sidecar is not None:
                        await sidecar.reap()
                    tg.cancel_scope.cancel()
        finally:
            checkpoints.stop()
            store.close()
            sock.close()
    log.info("backend.stopped")
    return 0


def _executor(options: BackendOptions) -> StepExecutor:
    """The executor the options name; the Celery one (and celery) loads only when chosen."""
    if options.executor == "celery" and options.broker:
        from workspace_adapter.cluster.executor import CeleryExecutor

        return CeleryExecutor(options.broker)
    return LocalExecutor()


def _why(exc: BaseException) -> str:
    """One line for a store that cannot be opened: locked and full say so plainly."""
    problem = unavailable(exc) if isinstance(exc, sqlite3.Error) else None
    return problem.message if problem is not None else str(exc)


async def _run_alongside(scope: anyio.CancelScope, companion: Companion) -> None:
    with scope:
        await companion.run()


async def _stop_on_signal(
    signals: Any,
    server: uvicorn.Server,
    queue: RunQueue,
    alongside: anyio.CancelScope,
    companion: Companion | None,
) -> None:
    async for signum in signals:
        get_logger(component="backend").info("backend.stopping", signal=signal.Signals(signum).name)
        # The companion stops first, so nothing new starts while the backend winds down.
        alongside.cancel()
        if companion is not None:
            await companion.wind_down()
        server.should_exit = True
        # Cancelling the steps and closing the sockets happen side by side: both must fit in
        # the 10 s an operator's supervisor waits.
        await queue.shutdown()
        return


def run_daemon(main: Callable[[], Awaitable[int]]) -> int:
    """Run a daemon's main coroutine on uvloop (asyncio's own loop if uvloop is missing).

    uvloop's transports are C: under a dispatch load the stdlib selector loop spent a quarter
    of the daemon's time moving bytes (bench/profiles/).
    """
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        return anyio.run(main, backend="asyncio")
    return anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})


def run_backend(options: BackendOptions) -> int:
    """Synchronous entry point for the CLI."""

    async def main() -> int:
        return await serve_backend(options)

    return run_daemon(main)
