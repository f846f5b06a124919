"""Helpers of the codex-flows compatibility tests: the recorded fixtures, the capture scenario,
and a stand-in Codex app-server (fixtures/tools/fake_app_server.py, in-process)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BUN = shutil.which("bun")
needs_bun = pytest.mark.skipif(BUN is None, reason="bun is not installed: bun flow steps not run")

THREADS = {
    "data": [
        {
            "id": "thr_1",
            "name": "fake thread",
            "status": {"type": "idle"},
            "cwd": "/tmp",
            "updatedAt": 1700000000,
        }
    ],
    "nextCursor": None,
}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def sent_frames(scenario: dict[str, Any]) -> list[str]:
    """What the recorded client sent, in order."""
    return [f["frame"] for f in scenario["frames"] if f["dir"] == "client->backend"]


def scenario_workspace(into: Path) -> Path:
    """A copy of the capture workspace (``dot-codex`` becomes ``.codex``)."""
    root = into / "cf-scn"
    shutil.copytree(FIXTURES / "scenario", root)
    (root / "dot-codex").rename(root / ".codex")
    return root


class StandInAppServer:
    """A JSON-RPC app-server on a loopback port: answers as the recorded fake one did.

    ``initialized`` is set each time a client finished ``initialize`` + ``initialized``;
    ``received`` keeps every frame a client sent.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.received: list[dict[str, Any]] = []
        self.initialized = anyio.Event()
        self._arrived = asyncio.Event()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> StandInAppServer:
        self.initialized = anyio.Event()
        self._server = await serve(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()  # closes every connection with 1001
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        async for text in ws:
            message = json.loads(text)
            self.received.append(message)
            self._arrived.set()
            if message.get("method") == "initialized":
                self.initialized.set()
            if "method" not in message or "id" not in message:
                continue
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
            method = message["method"]
            if method == "initialize":
                reply["result"] = {"userAgent": "stand-in/0", "platformOs": "linux"}
            elif method == "thread/list":
                reply["result"] = THREADS
            elif method == "test/trigger":
                await ws.send(
                    json.dumps(
                        {
                            "jsonrpc": "2.0",
                            "method": "thread/started",
                            "params": {"thread": {"id": "thr_2"}},
                        }
                    )
                )
                await ws.send(
                    json.dumps(
                        {
                            "jsonrpc": "2.0",
                            "id": 900,
                            "method": "item/commandExecution/requestApproval",
                            "params": {"threadId": "thr_2", "command": "ls"},
                        }
                    )
                )
                reply["result"] = {"triggered": True}
            else:
                reply["error"] = {"code": -32601, "message": f"fake: unknown method {method}"}
            await ws.send(json.dumps(reply))

    async def wait_for(self, **match: Any) -> dict[str, Any]:
        """The first frame received that has every key/value of ``match`` (waits for it)."""
        while True:
            for message in self.received:
                if all(message.get(k) == v for k, v in match.items()):
                    return message
            self._arrived.clear()
            await self._arrived.wait()
