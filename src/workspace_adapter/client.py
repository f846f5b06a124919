"""The WebSocket adapter: talks JSON-RPC 2.0 to a workspace backend (SPEC §6).

One connection per CLI invocation: ``initialize``, ``subscribe`` to the event *before*
``dispatch``, then follow ``flow.run.updated`` / ``flow.run.output`` until every run ends.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import websockets
from websockets.asyncio.client import ClientConnection, connect

from workspace_adapter import __version__
from workspace_adapter.errors import BackendUnreachable, UserError

TERMINAL_RUN_STATUSES = frozenset({"completed", "failed", "canceled"})

OutputCallback = Callable[[str, str, str], None]
"""Called with (run id, stream, line) for each line a step prints."""


class DispatchOutcome(msgspec.Struct, kw_only=True):
    """What a dispatch ended with: the reply's fields and, when followed, the final runs."""

    status: str
    event_id: str
    matched: int
    run_ids: list[str]
    runs: list[dict[str, Any]] = msgspec.field(default_factory=list)


class RpcError(UserError):
    """The backend answered a request with a JSON-RPC error."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"backend refused {method}: {message} ({code})", 1)
        self.code = code


class WorkspaceClient:
    """A JSON-RPC session over one open WebSocket; notifications are queued for the caller."""

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self.ws = ws
        self.url = url
        self._ids = itertools.count(1)
        self.notifications: list[dict[str, Any]] = []
        self.server_info: dict[str, Any] = {}

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one request and wait for its reply, queueing notifications seen meanwhile."""
        request_id = next(self._ids)
        frame: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            frame["params"] = params
        await self.ws.send(json.dumps(frame))
        while True:
            message = await self._receive()
            if message.get("id") != request_id:
                if "method" in message and "id" not in message:
                    self.notifications.append(message)
                continue
            error = message.get("error")
            if isinstance(error, dict):
                raise RpcError(method, int(error.get("code", 0)), str(error.get("message")))
            return message.get("result")

    async def next_notification(self) -> dict[str, Any]:
        """The next queued or incoming notification."""
        if self.notifications:
            return self.notifications.pop(0)
        while True:
            message = await self._receive()
            if "method" in message and "id" not in message:
                return message

    async def _receive(self) -> dict[str, Any]:
        try:
            raw = await self.ws.recv()
        except websockets.ConnectionClosed as exc:
            raise UserError(f"backend at {self.url} closed the connection: {exc}", 4) from None
        try:
            message = json.loads(raw)
        except ValueError:
            return {}
        return message if isinstance(message, dict) else {}

    async def initialize(self) -> dict[str, Any]:
        result = await self.request(
            "workspace.initialize",
            {"clientInfo": {"name": "workspace-adapter", "version": __version__}},
        )
        self.server_info = dict(result.get("serverInfo") or {}) if isinstance(result, dict) else {}
        return result if isinstance(result, dict) else {}


def _headers(token: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {token}"} if token else None


async def open_client(url: str, token: str | None = None, timeout: float = 5.0) -> WorkspaceClient:
    """Connect and initialize; :class:`BackendUnreachable` when nothing answers."""
    try:
        with anyio.fail_after(timeout):
            ws = await connect(
                url,
                additional_headers=_headers(token),
                max_size=16 * 1024 * 1024,
                open_timeout=timeout,
            )
    except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI):
        raise BackendUnreachable(url) from None
    client = WorkspaceClient(ws, url)
    await client.initialize()
    return client


async def probe(url: str, token: str | None = None, timeout: float = 2.0) -> dict[str, Any]:
    """The backend's ``serverInfo``; raises :class:`BackendUnreachable`."""
    client = await open_client(url, token, timeout)
    try:
        return client.server_info
    finally:
        await client.ws.close()


async def dispatch_and_follow(
    url: str,
    event: dict[str, Any],
    *,
    wait: bool = True,
    on_output: OutputCallback | None = None,
    token: str | None = None,
    connect_timeout: float = 5.0,
) -> DispatchOutcome:
    """Dispatch ``event``; with ``wait``, follow its runs to their end, streaming output."""
    client = await open_client(url, token, connect_timeout)
    try:
        if wait:
            await client.request("flow.subscribe", {"eventId": event["id"]})
        reply = await client.request("flow.dispatch", {"event": event})
        outcome = DispatchOutcome(
            status=str(reply.get("status")),
            event_id=str(reply.get("eventId", event["id"])),
            matched=int(reply.get("matched") or 0),
            run_ids=[str(r) for r in reply.get("runIds") or []],
        )
        if not wait or not outcome.run_ids:
            return outcome
        finished: dict[str, dict[str, Any]] = {}
        for run_id in outcome.run_ids:
            got = await client.request("flow.getRun", {"runId": run_id})
            run = got.get("run") if isinstance(got, dict) else None
            if isinstance(run, dict) and run.get("status") in TERMINAL_RUN_STATUSES:
                finished[run_id] = run
        while len(finished) < len(outcome.run_ids):
            note = await client.next_notification()
            params = note.get("params") or {}
            if note.get("method") == "flow.run.output" and on_output is not None:
                if params.get("runId") in outcome.run_ids:
                    on_output(
                        str(params.get("runId")),
                        str(params.get("stream")),
                        str(params.get("line")),
                    )
            elif note.get("method") == "flow.run.updated":
                run = params.get("run") or {}
                if run.get("id") in outcome.run_ids and run.get("status") in TERMINAL_RUN_STATUSES:
                    finished[str(run["id"])] = run
        outcome.runs = [finished[r] for r in outcome.run_ids]
        return outcome
    finally:
        await client.ws.close()
