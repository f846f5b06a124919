"""Fixtures of the cluster tests: a real ``redis-server`` on a free loopback port in a temporary
folder, real ``workspace worker`` processes (each with its own copy of the workspace) and a real
``workspace backend --executor celery``. No fake broker; skipped only when redis-server is not
installed (``.ci/run`` installs it).

The flows here have step timeouts of seconds, so a worker's visibility timeout (the longest
step timeout plus a margin) and a redelivery take seconds too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.backend import WORKSPACE, Backend, free_port
from support.waiting import wait_until

REDIS_SERVER = shutil.which("redis-server")
STEP_TIMEOUT_MS = 5000

CLUSTER_FLOWS: dict[str, str] = {
    "hello": f"""
        name = "hello"
        [[steps]]
        name = "say"
        runner = "command"
        command = ["sh", "-c", 'echo "on $CODEX_WORKSPACE_ROOT"; echo "$1"', "say",
                   'FLOW_RESULT {{"status":"completed"}}']
        timeout_ms = {STEP_TIMEOUT_MS}
        concurrency = 8
        [steps.trigger]
        type = "cluster.hello"
    """,
    "gate": f"""
        name = "gate"
        [[steps]]
        name = "wait"
        runner = "python"
        script = "gate.py"
        timeout_ms = {STEP_TIMEOUT_MS}
        concurrency = 8
        [steps.trigger]
        type = "cluster.gate"
    """,
}

# A step that notes its start in a shared log (and whether an earlier execution of its run is
# still alive: OVERLAP), prints "before <pid> <root>", waits for its gate file or its seconds,
# prints "after" and the status its payload asks for.
GATE_SCRIPT = r"""
import json, os, sys, time
context = json.loads(sys.stdin.readline())
payload = context["flow"]["event"]["payload"]
run = context["runtime"]["runId"]
log = payload.get("log")
me = os.getpid()


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


if log:
    lines = open(log).read().split("\n") if os.path.exists(log) else []
    ended = {l.split()[2] for l in lines if l.startswith("end ")}
    with open(log, "a") as f:
        for l in lines:
            parts = l.split()
            if parts[:1] == ["start"] and parts[1] == run and parts[2] not in ended:
                if alive(int(parts[2])):
                    f.write(f"OVERLAP {run} {parts[2]} {me}\n")
        f.write(f"start {run} {me} {os.environ['CODEX_WORKSPACE_ROOT']}\n")
print(f"before {me} {os.environ['CODEX_WORKSPACE_ROOT']}", flush=True)
gate = payload.get("gate")
deadline = time.time() + float(payload.get("seconds", 0))
while (gate and not os.path.exists(gate)) or time.time() < deadline:
    time.sleep(0.02)
print("after", flush=True)
if log:
    with open(log, "a") as f:
        f.write(f"end {run} {me}\n")
print("FLOW_RESULT " + json.dumps({"status": payload.get("status", "completed")}))
"""


def write_cluster_flows(root: Path) -> Path:
    for name, manifest in CLUSTER_FLOWS.items():
        folder = root / "flows" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "flow.toml").write_text(textwrap.dedent(manifest))
    (root / "flows" / "gate" / "gate.py").write_text(GATE_SCRIPT)
    return root


class RedisServer:
    """One ``redis-server`` on a free loopback port, its files in a temporary folder."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        assert REDIS_SERVER is not None
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, "redis-server to answer", within=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Worker:
    """One ``workspace worker`` process with a workspace of its own."""

    def __init__(self, root: Path, broker: str, name: str, concurrency: int = 4) -> None:
        self.root = root
        self.name = name
        self.log_path = root.parent / f"{name}-stderr.log"
        with open(self.log_path, "a") as err:
            self.proc = subprocess.Popen(
                [
                    str(WORKSPACE),
                    "--workspace-root",
                    str(root),
                    "worker",
                    "--broker",
                    broker,
                    "--name",
                    name,
                    "--concurrency",
                    str(concurrency),
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith(f"workspace worker {name} ready"), (line, self.stderr())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


class Cluster:
    """Redis, a backend workspace and worker workspaces, each a copy of the same flows."""

    def __init__(self, base: Path, redis_server: RedisServer) -> None:
        self.base = base
        self.redis = redis_server
        self.backend_root = write_cluster_flows(base / "backend-ws")
        self.workers: list[Worker] = []
        self.backends: list[Backend] = []

    def worker(self, name: str, concurrency: int = 4, root: Path | None = None) -> Worker:
        if root is None:
            root = write_cluster_flows(self.base / f"{name}-ws")
        worker = Worker(root, self.redis.url, name, concurrency)
        self.workers.append(worker)
        return worker

    def backend(self, *extra: str) -> Backend:
        data = self.base / "data"
        backend = Backend(
            self.backend_root,
            data,
            "--executor",
            "celery",
            "--broker",
            self.redis.url,
            "--concurrency",
            "16",
            *extra,
        ).start()
        self.backends.append(backend)
        return backend

    def close(self) -> None:
        for backend in self.backends:
            backend.stop()
        for worker in self.workers:
            worker.stop(signal.SIGKILL)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    found = Cluster(tmp_path, redis_server)
    yield found
    found.close()


def event(event_id: str, kind: str, **payload: Any) -> dict[str, Any]:
    return {"id": event_id, "type": kind, "payload": payload}


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def elapsed_since(started: float) -> float:
    return time.monotonic() - started


__all__ = ["json", "os", "sys"]
