"""Helpers for the backend tests: a real daemon subprocess, trivial flows, wire helpers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

WORKSPACE = Path(sys.executable).with_name("workspace")
SECRET = "test-secret"

FLOWS: dict[str, str] = {
    "demo": """
        name = "demo"
        version = "1.0.0"
        [[steps]]
        name = "hello"
        runner = "command"
        command = ['printf', 'hello\\nFLOW_RESULT {"status":"completed"}\\n']
        [steps.trigger]
        type = "demo.event"
    """,
    "schema-demo": """
        name = "schema-demo"
        [[steps]]
        name = "greet"
        runner = "command"
        command = ['printf', 'FLOW_RESULT {"status":"completed"}\\n']
        [steps.trigger]
        type = "schema.event"
        schema = "schema.json"
    """,
    "sleeper": """
        name = "sleeper"
        [[steps]]
        name = "nap"
        runner = "command"
        command = ["sh", "-c", "sleep 300 & echo child $!; echo started; wait"]
        concurrency = 8
        [steps.trigger]
        type = "sleep.event"
    """,
    "tails": """
        name = "tails"
        [[steps]]
        name = "long"
        runner = "python"
        script = "tails.py"
        concurrency = 8
        [steps.trigger]
        type = "tails.event"
    """,
    "flood": """
        name = "flood"
        [[steps]]
        name = "spew"
        runner = "python"
        script = "flood.py"
        concurrency = 4
        [steps.trigger]
        type = "flood.event"
    """,
}

FLOOD_SCRIPT = """
import json, sys
context = json.loads(sys.stdin.readline())
lines = int(context["flow"]["event"]["payload"].get("lines", 1000))
chunk = ("x" * 400 + "\\n") * 100
for _ in range(lines // 100):
    sys.stdout.write(chunk)
sys.stdout.flush()
print('FLOW_RESULT {"status": "completed"}')
"""


TAILS_SCRIPT = """
import sys
sys.stdin.readline()
for _ in range(1200):
    print("y" * 60)
    print("z" * 60, file=sys.stderr)
print('FLOW_RESULT {"status": "completed"}')
"""


def write_flows(root: Path) -> Path:
    """A workspace root with the trivial flows above under ``flows/``."""
    for name, manifest in FLOWS.items():
        folder = root / "flows" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "flow.toml").write_text(textwrap.dedent(manifest))
    (root / "flows" / "schema-demo" / "schema.json").write_text(
        json.dumps(
            {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
        )
    )
    (root / "flows" / "flood" / "flood.py").write_text(FLOOD_SCRIPT)
    (root / "flows" / "tails" / "tails.py").write_text(TAILS_SCRIPT)
    return root


class Backend:
    """One ``workspace backend`` subprocess; :meth:`start` waits for the printed URL."""

    def __init__(self, root: Path, data_dir: Path, *args: str, env: dict[str, str] | None = None):
        self.root = root
        self.data_dir = data_dir
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.stderr_path = data_dir.parent / f"{data_dir.name}-stderr.log"

    @property
    def http(self) -> str:
        return "http://" + self.url.removeprefix("ws://")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Backend:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                str(WORKSPACE),
                "backend",
                "--port",
                "0",
                "--cwd",
                str(self.root),
                "--data-dir",
                str(self.data_dir),
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=open(self.stderr_path, "a"),  # noqa: SIM115
            text=True,
            env=self.env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("workspace backend listening on "), (line, self.stderr())
        self.url = line.split()[-1]
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])


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

    async def reply(self, request_id: Any) -> dict[str, Any]:
        while request_id not in self.replies:
            message = await self.read()
            if "id" in message:
                self.replies[message["id"]] = message
            else:
                self.notes.append(message)
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
            message = await self.read()
            if "id" in message:
                self.replies[message["id"]] = message
            else:
                self.notes.append(message)


async def open_rpc(url: str, **kwargs: Any) -> Rpc:
    ws = await connect(url, compression=None, **kwargs)
    rpc = Rpc(ws)
    hello = await rpc.read()
    assert hello["method"] == "workspace.event", hello
    return rpc


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
