"""The WebSocket client of a workspace backend: one JSON-RPC 2.0 session per connection.

:func:`open_client` connects and says ``workspace.initialize``; a :class:`WorkspaceClient`
sends requests one at a time and queues the notifications it reads on the way. Frames are
encoded and decoded by :mod:`workspace_adapter.protocol`; runs arrive as its
:class:`~workspace_adapter.protocol.WireRun`. The errors say what went wrong in one line:
unreachable, refused (token), closed under us, timed out, or a method the backend does not
offer. :class:`ReconnectingClient` is the long-lived variant for a daemon (``workspace serve``):
it reconnects with backoff when the backend restarts. Following runs to their end, across
drops, is :mod:`workspace_adapter.following`'s.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
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
from workspace_adapter.protocol import WireRun

TOKEN_ENV = "CODEX_WORKSPACE_BACKEND_TOKEN"
DEFAULT_REQUEST_TIMEOUT = 30.0
RECEIVE_QUEUE_FRAMES = 1024
"""Frames the WebSocket takes off the socket ahead of us (websockets' default is 16): a burst
of output lines is kept here rather than left in the backend's outbox for us, which closes us
(1008) once it is full."""

T = TypeVar("T")


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


async def open_client_with_backoff(
    url: str,
    token: str | None = None,
    timeout: float = 5.0,
    *,
    first: float,
    most: float,
    within: float | None = None,
    attempts: int | None = None,
) -> WorkspaceClient:
    """:func:`open_client` again while the backend is unreachable, waiting a random share of a
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
            return await open_client(url, token, timeout)
    raise AssertionError("tenacity ends in a result or the last error")


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
    the runs (:func:`~workspace_adapter.following.follow_runs` does the re-read).
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
            client = await open_client_with_backoff(
                self.url,
                self.token,
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
