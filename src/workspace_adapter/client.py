"""The WebSocket adapter: talks JSON-RPC 2.0 to a workspace backend (docs/api.md).

One connection per CLI invocation: ``initialize``, then, where the backend offers
``flow.subscribe`` (its ``capabilities.workspaceMethods``), subscribe to the event *before*
``dispatch`` and follow ``flow.run.updated`` / ``flow.run.output`` until every run ends; a
backend without it (codex-flows' workspace backend) is polled with ``flow.getRun`` instead.
Frames are encoded and decoded by :mod:`workspace_adapter.protocol`; runs arrive as its
:class:`~workspace_adapter.protocol.WireRun`.
Following survives a dropped connection (:func:`follow_until_done`): the backend closes a
subscriber that reads too slowly (1008), or restarts; the follower connects again, subscribes
again, re-reads the runs and goes on, so it still ends with the runs' real outcome (the lines
printed meanwhile are not shown, and it says so). Output is handed to the caller's callback in
a thread of its own through a bounded buffer (:class:`OutputRelay`), so a slow reader of our
own stdout never stops us reading the socket.
:class:`ReconnectingClient` is the long-lived variant for a daemon (``workspace serve``): it
reconnects with backoff when the backend restarts.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import anyio
import msgspec
import websockets
from websockets.asyncio.client import ClientConnection, connect

from workspace_adapter import __version__
from workspace_adapter import protocol as rpc
from workspace_adapter.base.errors import (
    EXIT_BACKEND_UNREACHABLE,
    EXIT_BAD_INPUT,
    BackendRefused,
    BackendUnreachable,
    UserError,
)
from workspace_adapter.base.outputrelay import NoticeCallback, OutputRelay
from workspace_adapter.protocol import WireRun

TOKEN_ENV = "CODEX_WORKSPACE_BACKEND_TOKEN"
DEFAULT_REQUEST_TIMEOUT = 30.0
POLL_FIRST_SECONDS = 0.05
POLL_MAX_SECONDS = 1.0
"""Polling ``flow.getRun`` (no ``flow.subscribe``): 50 ms, doubling up to 1 s between rounds."""

RECONNECT_SECONDS = 30.0
"""How long a follower whose connection dropped keeps trying to reach the backend again."""
RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 2.0
RECEIVE_QUEUE_FRAMES = 1024
"""Frames the WebSocket takes off the socket ahead of us (websockets' default is 16): a burst
of output lines is kept here rather than left in the backend's outbox for us, which closes us
(1008) once it is full."""

OutputCallback = Callable[[str, str, str], None]
"""Called with (run id, stream, line) for each line a step prints."""

T = TypeVar("T")


class DispatchOutcome(msgspec.Struct, kw_only=True):
    """What a dispatch ended with: the reply's fields and, when followed, the final runs."""

    status: str
    event_id: str
    matched: int
    run_ids: list[str]
    runs: list[WireRun] = msgspec.field(default_factory=list)

    @property
    def duplicate(self) -> bool:
        """The backend already had this event; ``run_ids`` are its existing runs.

        codex-flows answers a duplicate with ``matched: 0``, so only ``run_ids`` say whether
        any flow wanted the event.
        """
        return self.status == rpc.DispatchStatus.DUPLICATE


class RpcError(UserError):
    """The backend answered a request with a JSON-RPC error."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"backend refused {method}: {message} ({code})", 1)
        self.code = code


class MethodNotOffered(UserError):
    """The backend does not serve a method this command needs (exit code 2)."""

    def __init__(self, url: str, method: str, doing: str = "") -> None:
        why = f"the backend at {url} does not offer {method}"
        super().__init__(f"{doing}: {why}" if doing else why, 2)
        self.method = method


class ConnectionLost(UserError):
    """The backend closed the connection under us."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(
            f"backend at {url} closed the connection: {detail}", EXIT_BACKEND_UNREACHABLE
        )
        self.detail = detail


class FollowLost(UserError):
    """The connection dropped while following runs and the backend did not come back."""

    def __init__(self, url: str, run_ids: list[str], seconds: float) -> None:
        super().__init__(
            f"lost the backend at {url} while following {', '.join(run_ids)} and could not "
            f"reconnect within {seconds:g}s; `workspace show RUN_ID --follow` picks a run up again",
            EXIT_BACKEND_UNREACHABLE,
        )
        self.run_ids = run_ids


class BlankToken(UserError):
    """The token variable is set to blanks: it would be sent, and match nothing (exit 2)."""

    def __init__(self) -> None:
        super().__init__(
            f"{TOKEN_ENV} is blank; set it to the backend's token, or unset it", EXIT_BAD_INPUT
        )


class RequestTimeout(UserError, TimeoutError):
    """The backend did not answer a request in time (still a :class:`TimeoutError`)."""

    def __init__(self, url: str, method: str, timeout: float) -> None:
        super().__init__(
            f"backend at {url} did not answer {method} within {timeout:g}s",
            EXIT_BACKEND_UNREACHABLE,
        )


class WorkspaceClient:
    """A JSON-RPC session over one open WebSocket; notifications are queued for the caller.

    Calls are sequential: :meth:`request` reads until its reply arrives and keeps the
    notifications it sees on the way in :attr:`notifications`.
    """

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self.ws = ws
        self.url = url
        self._ids = itertools.count(1)
        self.notifications: deque[rpc.Notification] = deque()
        self.server_info: dict[str, Any] = {}
        self.methods: frozenset[str] | None = None
        """``capabilities.workspaceMethods`` of the initialize reply; None when not listed."""

    def offers(self, method: str) -> bool:
        """Whether the backend serves ``method`` (assumed when it lists no methods)."""
        return self.methods is None or method in self.methods

    @overload
    async def request(
        self, method: str, params: Any = None, *, timeout: float | None = ...
    ) -> Any: ...

    @overload
    async def request(
        self, method: str, params: Any = None, *, timeout: float | None = ..., result: type[T]
    ) -> T: ...

    async def request(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        result: Any = Any,
    ) -> Any:
        """Send one request and wait for its reply, decoded as ``result`` (plain JSON values
        by default); ``params`` is a params struct or a dict; ``timeout`` None: no limit.
        """
        request_id = next(self._ids)
        try:
            await self.ws.send(rpc.encode_request(request_id, method, params))
        except websockets.ConnectionClosed as exc:
            raise ConnectionLost(self.url, str(exc)) from None
        with anyio.move_on_after(timeout):
            while True:
                message = await self._receive()
                if isinstance(message, rpc.Notification):
                    self.notifications.append(message)
                    continue
                if message.id != request_id:
                    continue
                if message.error is not None:
                    raise RpcError(method, message.error.code, message.error.message)
                try:
                    return rpc.decode_result(message, result)
                except msgspec.ValidationError as exc:
                    raise UserError(f"backend answered {method} with {exc}", 1) from None
        assert timeout is not None
        raise RequestTimeout(self.url, method, timeout)

    async def next_notification(self) -> rpc.Notification:
        """The next queued or incoming notification."""
        if self.notifications:
            return self.notifications.popleft()
        while True:
            message = await self._receive()
            if isinstance(message, rpc.Notification):
                return message

    async def _receive(self) -> rpc.Reply | rpc.Notification:
        while True:
            try:
                raw = await self.ws.recv()
            except websockets.ConnectionClosed as exc:
                raise ConnectionLost(self.url, str(exc)) from None
            message = rpc.decode_incoming(raw)
            if message is not None:
                return message

    async def initialize(self) -> dict[str, Any]:
        params = rpc.InitializeParams(
            clientInfo={"name": "workspace-adapter", "version": __version__}
        )
        result = await self.request("workspace.initialize", params)
        if not isinstance(result, dict):
            return {}
        info = result.get("serverInfo")
        self.server_info = dict(info) if isinstance(info, dict) else {}
        capabilities = result.get("capabilities")
        methods = capabilities.get("workspaceMethods") if isinstance(capabilities, dict) else None
        if isinstance(methods, list):
            self.methods = frozenset(m for m in methods if isinstance(m, str))
        return result

    async def close(self) -> None:
        await self.ws.close()


def token_from_env() -> str | None:
    """``$CODEX_WORKSPACE_BACKEND_TOKEN``; None when unset or empty, :class:`BlankToken` when
    it holds only blanks (a token of spaces is a mistake, never a secret)."""
    token = os.environ.get(TOKEN_ENV)
    if token and not token.strip():
        raise BlankToken
    return token or None


def _token(token: str | None) -> str | None:
    return token or token_from_env()


def _headers(token: str | None) -> dict[str, str] | None:
    token = _token(token)
    return {"Authorization": f"Bearer {token}"} if token else None


async def open_client(url: str, token: str | None = None, timeout: float = 5.0) -> WorkspaceClient:
    """Connect and initialize; :class:`BackendUnreachable` when nothing answers,
    :class:`BackendRefused` when it answers 401 or 403 (a missing or wrong token).

    ``token`` defaults to ``$CODEX_WORKSPACE_BACKEND_TOKEN``.
    """
    try:
        with anyio.fail_after(timeout):
            ws = await connect(
                url,
                additional_headers=_headers(token),
                max_size=16 * 1024 * 1024,
                max_queue=RECEIVE_QUEUE_FRAMES,
                open_timeout=timeout,
                compression=None,
            )
    except websockets.InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise BackendRefused(
                url, status, token_env=TOKEN_ENV, token_sent=_token(token) is not None
            ) from None
        raise BackendUnreachable(url) from None
    except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI):
        raise BackendUnreachable(url) from None
    client = WorkspaceClient(ws, url)
    try:
        with anyio.fail_after(timeout):
            await client.initialize()
    except TimeoutError:
        await client.close()
        raise BackendUnreachable(url) from None
    return client


async def probe(url: str, token: str | None = None, timeout: float = 2.0) -> dict[str, Any]:
    """The backend's ``serverInfo``; raises :class:`BackendUnreachable`."""
    client = await open_client(url, token, timeout)
    try:
        return client.server_info
    finally:
        await client.close()


async def subscribe(client: WorkspaceClient, event_id: str) -> bool:
    """Subscribe to ``event_id``'s runs where the backend offers it; False when it does not."""
    if not client.offers("flow.subscribe"):
        return False
    await client.request("flow.subscribe", rpc.SubscribeParams(eventId=event_id))
    return True


async def follow_runs(
    client: WorkspaceClient, run_ids: list[str], on_output: OutputCallback | None = None
) -> list[WireRun]:
    """Wait until every run has ended, streaming output.

    With ``flow.subscribe`` the client must already be subscribed (:func:`subscribe`);
    without it the runs are polled (:func:`poll_runs`).
    """
    if not client.offers("flow.subscribe"):
        return await poll_runs(client, run_ids, on_output)
    finished: dict[str, WireRun] = {}
    wanted = set(run_ids)

    def handle(note: rpc.Notification) -> None:
        try:
            if note.method == rpc.RUN_OUTPUT:
                line = rpc.decode_params(note, rpc.RunOutput)
                if on_output is not None and line.runId in wanted:
                    on_output(line.runId, line.stream, line.line)
            elif note.method == rpc.RUN_UPDATED:
                run = rpc.decode_params(note, rpc.RunUpdated).run
                if run.id in wanted and run.terminal:
                    finished[run.id] = run
        except msgspec.ValidationError:
            return  # not a notification we can read; the run's final state still comes

    try:
        # Runs that ended before we subscribed (a duplicate dispatch) send nothing more.
        for run_id in run_ids:
            got = await client.request(
                "flow.getRun", rpc.RunIdParams(runId=run_id), result=rpc.RunResult
            )
            if got.run.terminal:
                finished[run_id] = got.run
        # Lines that arrived while we asked are still ours to show, even for a finished run.
        while client.notifications:
            handle(client.notifications.popleft())
        while len(finished) < len(run_ids):
            handle(await client.next_notification())
    except ConnectionLost:
        # What did arrive before the drop is shown; a follower on a new connection goes on.
        while client.notifications:
            handle(client.notifications.popleft())
        raise
    return [finished[r] for r in run_ids]


async def poll_runs(
    client: WorkspaceClient,
    run_ids: list[str],
    on_output: OutputCallback | None = None,
    *,
    first: float = POLL_FIRST_SECONDS,
    longest: float = POLL_MAX_SECONDS,
) -> list[WireRun]:
    """Ask ``flow.getRun`` for each unfinished run until all have ended.

    Rounds are ``first`` seconds apart, doubling up to ``longest``. Such a backend streams no
    output: a run's ``stderr`` is handed to ``on_output`` once it has ended (its ``stdout`` is
    the runner's result JSON, read through the run itself).
    """
    finished: dict[str, WireRun] = {}
    delay = first
    while True:
        for run_id in run_ids:
            if run_id in finished:
                continue
            got = await client.request(
                "flow.getRun", rpc.RunIdParams(runId=run_id), result=rpc.RunResult
            )
            if got.run.terminal:
                finished[run_id] = got.run
                if on_output is not None:
                    for line in got.run.stderr.splitlines():
                        on_output(run_id, "stderr", line)
        client.notifications.clear()  # workspace.event and the like: nothing to follow
        if len(finished) == len(run_ids):
            return [finished[r] for r in run_ids]
        await anyio.sleep(delay)
        delay = min(longest, delay * 2)


def _stderr_notice(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


async def follow_until_done(
    client: WorkspaceClient,
    event_id: str,
    run_ids: list[str],
    on_output: OutputCallback | None = None,
    *,
    token: str | None = None,
    connect_timeout: float = 5.0,
    reconnect_for: float = RECONNECT_SECONDS,
    on_notice: NoticeCallback = _stderr_notice,
) -> list[WireRun]:
    """:func:`follow_runs` to the end, on a new connection each time the backend drops ours.

    ``client`` must already be subscribed to ``event_id`` where the backend offers it; it is
    closed here, with every later connection. Output goes through an :class:`OutputRelay`.
    After a drop (1008 for a slow reader, a restart, a lost network), the lines printed until
    the follower is back are not shown, and ``on_notice`` says so once per drop; the runs'
    final state is read again on the new connection, so the outcome is the real one.
    :class:`FollowLost` when the backend stays away for ``reconnect_for`` seconds.
    """
    relay = OutputRelay(on_output, on_notice) if on_output is not None else None
    session = client
    resubscribe = False
    try:
        while True:
            try:
                if resubscribe:
                    await subscribe(session, event_id)
                runs = await follow_runs(session, run_ids, relay)
            except ConnectionLost as lost:
                await session.close()
                said = f"the backend dropped this follower ({lost.detail}); reconnecting"
                (relay.notice if relay is not None else on_notice)(
                    f"{said}: output of {', '.join(run_ids)} until then is not shown"
                )
                try:
                    session = await _reconnect(session.url, token, connect_timeout, reconnect_for)
                except BackendUnreachable:
                    raise FollowLost(session.url, run_ids, reconnect_for) from None
                resubscribe = True
                continue
            if relay is not None:
                # Every line before the summary the caller prints next; blocks while our own
                # stdout is not read, as printing the summary would.
                await anyio.to_thread.run_sync(relay.close)
            return runs
    finally:
        if relay is not None:
            relay.close(drain=False)  # after an error; a no-op once drained
        await session.close()


async def _reconnect(
    url: str, token: str | None, connect_timeout: float, within: float
) -> WorkspaceClient:
    """A new session, trying with backoff for ``within`` seconds; else BackendUnreachable."""
    return await _with_backoff(
        lambda: open_client(url, token, connect_timeout),
        first=RECONNECT_FIRST_SECONDS,
        most=RECONNECT_MAX_SECONDS,
        within=within,
    )


async def _with_backoff(
    attempt: Callable[[], Awaitable[T]],
    *,
    first: float,
    most: float,
    within: float | None = None,
    attempts: int | None = None,
) -> T:
    """``await attempt()`` again while the backend is unreachable, waiting a random share of a
    delay that doubles from ``first`` up to ``most`` (clients that lost one backend together do
    not all come back at once); the last BackendUnreachable once another try would start after
    ``within`` seconds, or after ``attempts`` tries (neither: try until canceled)."""
    import tenacity  # only once a connection failed: the first try never pays its import

    stops: list[tenacity.stop.stop_base] = []
    if within is not None:
        stops.append(tenacity.stop_before_delay(within))
    if attempts is not None:
        stops.append(tenacity.stop_after_attempt(attempts))
    async for trying in tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(BackendUnreachable),
        wait=tenacity.wait_random_exponential(multiplier=first, max=most),
        stop=tenacity.stop_any(*stops),  # none: never stops
        sleep=anyio.sleep,
        reraise=True,
    ):
        with trying:
            return await attempt()
    raise AssertionError("tenacity ends in a result or the last error")


AcknowledgedCallback = Callable[["DispatchOutcome"], None]
"""Called with the dispatch's outcome (its event id and run ids) as soon as the backend
acknowledged it, before any run is followed."""


async def dispatch_and_follow(
    url: str,
    event: dict[str, Any],
    *,
    wait: bool = True,
    on_output: OutputCallback | None = None,
    on_acknowledged: AcknowledgedCallback | None = None,
    token: str | None = None,
    connect_timeout: float = 5.0,
) -> DispatchOutcome:
    """Dispatch ``event``; with ``wait``, follow its runs to their end, streaming output."""
    return await _send_and_follow(
        url,
        "flow.dispatch",
        rpc.DispatchParams(event=event),
        # A missing id is the backend's to refuse (-32602 naming it), not a KeyError here.
        str(event.get("id", "")),
        wait,
        on_output,
        on_acknowledged,
        token,
        connect_timeout,
    )


async def replay_and_follow(
    url: str,
    event_id: str,
    *,
    wait: bool = True,
    on_output: OutputCallback | None = None,
    on_acknowledged: AcknowledgedCallback | None = None,
    token: str | None = None,
    connect_timeout: float = 5.0,
) -> DispatchOutcome:
    """Replay a stored event; with ``wait``, follow the new runs like a dispatch."""
    return await _send_and_follow(
        url,
        "flow.replay",
        rpc.ReplayParams(eventId=event_id),
        event_id,
        wait,
        on_output,
        on_acknowledged,
        token,
        connect_timeout,
    )


async def _send_and_follow(
    url: str,
    method: str,
    params: rpc.DispatchParams | rpc.ReplayParams,
    event_id: str,
    wait: bool,
    on_output: OutputCallback | None,
    on_acknowledged: AcknowledgedCallback | None,
    token: str | None,
    connect_timeout: float,
) -> DispatchOutcome:
    client = await open_client(url, token, connect_timeout)
    try:
        if wait:
            # Before the dispatch, so not one line of a fast run is missed.
            await subscribe(client, event_id)
        reply = await client.request(method, params, result=rpc.DispatchResult)
        outcome = DispatchOutcome(
            status=reply.status,
            event_id=reply.eventId or event_id,
            matched=reply.matched,
            run_ids=reply.runIds,
        )
        if on_acknowledged is not None:
            on_acknowledged(outcome)
        if wait and outcome.run_ids:
            outcome.runs = await follow_until_done(
                client,
                outcome.event_id,
                outcome.run_ids,
                on_output,
                token=token,
                connect_timeout=connect_timeout,
            )
        return outcome
    finally:
        await client.close()  # again after follow_until_done closed it: a no-op


async def cancel_run(url: str, run_id: str, *, token: str | None = None) -> WireRun:
    """Cancel a run; :class:`MethodNotOffered` when the backend has no ``flow.cancelRun``."""
    method = "flow.cancelRun"
    client = await open_client(url, token)
    try:
        doing = f"cannot cancel {run_id}"
        if not client.offers(method):
            raise MethodNotOffered(url, method, doing)
        try:
            got = await client.request(method, rpc.RunIdParams(runId=run_id), result=rpc.RunResult)
        except RpcError as exc:
            if exc.code == rpc.METHOD_NOT_FOUND:
                raise MethodNotOffered(url, method, doing) from None
            raise
        return got.run
    finally:
        await client.close()


@overload
async def call(
    url: str,
    method: str,
    params: Any = None,
    *,
    token: str | None = ...,
    timeout: float | None = ...,
) -> Any: ...


@overload
async def call(
    url: str,
    method: str,
    params: Any = None,
    *,
    token: str | None = ...,
    timeout: float | None = ...,
    result: type[T],
) -> T: ...


async def call(
    url: str,
    method: str,
    params: Any = None,
    *,
    token: str | None = None,
    timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    result: Any = Any,
) -> Any:
    """One request on a fresh connection (for the inspection commands)."""
    client = await open_client(url, token)
    try:
        return await client.request(method, params, timeout=timeout, result=result)
    finally:
        await client.close()


class ReconnectingClient:
    """A long-lived session that reconnects with exponential backoff and jitter.

    Requests are retried once on a fresh connection when the old one dropped. Notifications
    seen by a lost connection are gone; a caller that follows runs re-subscribes and re-reads
    the runs (:func:`follow_runs` does the re-read).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        initial_backoff: float = 0.2,
        max_backoff: float = 10.0,
    ) -> None:
        self.url = url
        self.token = token
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._client: WorkspaceClient | None = None
        self._lock = anyio.Lock()

    async def connect(self, attempts: int | None = None) -> WorkspaceClient:
        """The open session, (re)connecting as needed; ``attempts`` None means keep trying."""
        async with self._lock:
            if self._client is not None:
                return self._client
            client = await _with_backoff(
                lambda: open_client(self.url, self.token),
                first=self.initial_backoff,
                most=self.max_backoff,
                attempts=attempts,
            )
            self._client = client
            return client

    @overload
    async def request(self, method: str, params: Any = None) -> Any: ...

    @overload
    async def request(self, method: str, params: Any = None, *, result: type[T]) -> T: ...

    async def request(self, method: str, params: Any = None, *, result: Any = Any) -> Any:
        for retry in (False, True):
            client = await self.connect()
            try:
                return await client.request(method, params, result=result)
            except ConnectionLost:
                self._client = None
                if retry:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
