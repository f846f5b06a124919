"""Talking to a running backend as a client would: plain HTTP and a raw JSON-RPC WebSocket."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One HTTP request; (status, decoded JSON body or text)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class Rpc:
    """A raw JSON-RPC WebSocket session for tests: send frames, read replies by id."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.notes: list[dict[str, Any]] = []
        self.replies: dict[Any, dict[str, Any]] = {}

    async def send(self, method: str, params: Any = None) -> int:
        self.next_id += 1
        frame: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            frame["params"] = params
        await self.ws.send(json.dumps(frame))
        return self.next_id

    async def read(self) -> dict[str, Any]:
        message = json.loads(await self.ws.recv())
        assert isinstance(message, dict)
        return message

    async def read_into_inboxes(self) -> None:
        """One message, filed as a reply (it has an id) or a notification."""
        message = await self.read()
        if "id" in message:
            self.replies[message["id"]] = message
        else:
            self.notes.append(message)

    async def reply(self, request_id: Any) -> dict[str, Any]:
        while request_id not in self.replies:
            await self.read_into_inboxes()
        return self.replies.pop(request_id)

    async def call(self, method: str, params: Any = None) -> Any:
        message = await self.reply(await self.send(method, params))
        assert "error" not in message, message
        return message["result"]

    async def note(self, method: str, predicate: Any = None, timeout: float = 10) -> dict[str, Any]:
        """The next notification of ``method`` (optionally matching ``predicate(params)``)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, note in enumerate(self.notes):
                if note.get("method") == method and (
                    predicate is None or predicate(note["params"])
                ):
                    return self.notes.pop(i)
            assert time.monotonic() < deadline, f"no {method} notification"
            await self.read_into_inboxes()


async def open_rpc(url: str, **kwargs: Any) -> Rpc:
    """A session on ``url`` whose greeting (the first ``workspace.event``) is already read."""
    ws = await connect(url, compression=None, **kwargs)
    rpc = Rpc(ws)
    hello = await rpc.read()
    assert hello["method"] == "workspace.event", hello
    return rpc
