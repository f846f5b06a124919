"""The backend's one connection to a Codex app-server, for the ``appServer.*`` pass-through.

Frames and param checks are :mod:`~workspace_adapter.backend.passthrough`'s; this module moves
them. It connects as a WebSocket client, says ``initialize`` + ``initialized`` on every
connection (as codex-flows' backend does on its first), passes calls through with its own
request ids, and hands the app-server's notifications and requests to every connected client.
Unlike codex-flows, an app-server that is down does not stop the backend: the link reconnects
in the background with a jittered exponential backoff, and calls meanwhile get an error reply
saying it is unreachable.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

import anyio
import websockets
from websockets.asyncio.client import ClientConnection, connect

from workspace_adapter import protocol as rpc
from workspace_adapter.backend import passthrough
from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.times import utc_now_iso

# codex-flows' own request timeout toward the app-server.
REQUEST_TIMEOUT = 90.0
CONNECT_TIMEOUT = 10.0
FIRST_DELAY = 0.5
MAX_DELAY = 30.0


class HandshakeRefused(Exception):
    """The app-server answered ``initialize`` with an error."""


class _Pending:
    """A call waiting for the app-server's reply (or for the connection to drop)."""

    __slots__ = ("done", "error", "lost", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: Any = None
        self.error: Any = None
        self.lost: str | None = None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class AppServerLink:
    """A reconnecting client of one app-server; ``broadcast`` reaches every backend client."""

    def __init__(
        self,
        url: str,
        broadcast: Callable[[bytes], None],
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.url = url
        self._broadcast = broadcast
        self.request_timeout = request_timeout
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self.error: str | None = "not connected yet"
        self._log = get_logger(component="app-server", url=url)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def status(self) -> dict[str, Any]:
        """``{url, connected, error?}`` for ``/readyz`` and the doctor."""
        found: dict[str, Any] = {"url": self.url, "connected": self.connected}
        if not self.connected and self.error:
            found["error"] = self.error
        return found

    # --- the connection's life ----------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff, until cancelled."""
        delay = self.first_delay
        try:
            while True:
                ws: ClientConnection | None = None
                try:
                    with anyio.fail_after(CONNECT_TIMEOUT):
                        ws = await connect(
                            self.url, max_size=None, compression=None, open_timeout=None
                        )
                        await self._handshake(ws)
                except (
                    OSError,
                    TimeoutError,
                    websockets.WebSocketException,
                    HandshakeRefused,
                ) as exc:
                    self._failed(f"cannot connect: {_describe(exc)}")
                    if ws is not None:
                        await ws.close()
                else:
                    delay = self.first_delay
                    await self._serve(ws)
                # Jittered: backends restarted together do not knock on the app-server at once.
                await anyio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.max_delay)
        finally:
            if self._ws is not None:
                with anyio.CancelScope(shield=True):
                    await self._ws.close()

    async def _handshake(self, ws: ClientConnection) -> None:
        request_id = next(self._ids)
        await ws.send(passthrough.app_server_initialize(request_id).decode())
        while True:
            message = passthrough.decode_app_server_message(await ws.recv())
            if message is None:
                continue
            if message.kind == "reply" and message.id == request_id:
                if "error" in message.message:
                    raise HandshakeRefused(f"initialize refused: {message.message['error']}")
                break
            self._pass_on(message)
        await ws.send(passthrough.app_server_initialized().decode())

    async def _serve(self, ws: ClientConnection) -> None:
        self._ws, self.error = ws, None
        self._log.info("app_server.connected")
        self._broadcast(rpc.workspace_event("appServer.connected", utc_now_iso(), url=self.url))
        try:
            async for frame in ws:
                message = passthrough.decode_app_server_message(frame)
                if message is not None:
                    self._pass_on(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            self._ws = None
            code, reason = ws.close_code, ws.close_reason
            self.error = f"connection closed ({code}{f' {reason}' if reason else ''})"
            for pending in self._pending.values():
                pending.lost = self.error
                pending.done.set()
        self._log.warning("app_server.closed", code=code, reason=reason)
        self._broadcast(
            rpc.workspace_event(
                "appServer.closed", utc_now_iso(), code=code, reason=reason if code else None
            )
        )

    def _failed(self, why: str) -> None:
        self.error = why
        self._log.warning("app_server.unreachable", problem=why)
        self._broadcast(rpc.workspace_event("appServer.error", utc_now_iso(), message=why))

    def _pass_on(self, message: passthrough.AppServerMessage) -> None:
        if message.kind == "reply":
            pending = self._pending.get(message.id) if isinstance(message.id, int) else None
            if pending is not None:
                pending.result = message.message.get("result")
                pending.error = message.message.get("error")
                pending.done.set()
            return
        method = "appServer.request" if message.kind == "request" else "appServer.notification"
        self._broadcast(rpc.encode_notification(method, {"message": message.message}))

    # --- what clients ask for -----------------------------------------------------------------

    def _connection(self) -> ClientConnection:
        if self._ws is None:
            raise passthrough.app_server_unreachable(self.url, self.error or "not connected")
        return self._ws

    async def _send(self, ws: ClientConnection, frame: bytes) -> None:
        try:
            await ws.send(frame.decode())
        except websockets.ConnectionClosed:
            raise passthrough.app_server_unreachable(self.url, "connection closed") from None

    async def call(self, call: passthrough.AppServerCall) -> Any:
        """The app-server's result for ``call``, verbatim; its error as an :class:`RpcFault`."""
        ws = self._connection()
        request_id = next(self._ids)
        pending = self._pending[request_id] = _Pending()
        try:
            await self._send(ws, passthrough.app_server_request(request_id, call))
            with anyio.move_on_after(self.request_timeout):
                await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if pending.lost is not None:
            raise passthrough.app_server_unreachable(self.url, pending.lost)
        if not pending.done.is_set():
            raise rpc.RpcFault(
                rpc.INTERNAL_ERROR,
                f"app-server did not answer {call.method} within {self.request_timeout:g} s",
                data={"reason": "app_server_timeout"},
            )
        if pending.error is not None:
            raise passthrough.app_server_error_fault(pending.error)
        return pending.result

    async def notify(self, call: passthrough.AppServerCall) -> dict[str, bool]:
        await self._send(self._connection(), passthrough.app_server_notification(call))
        return {"ok": True}

    async def respond(self, reply: passthrough.AppServerReply) -> dict[str, bool]:
        await self._send(self._connection(), passthrough.app_server_response(reply))
        return {"ok": True}
