"""A real ``workspace backend --port 0`` subprocess for tests, the same service in-process, and
loopback ports nothing uses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio

from workspace_adapter import client
from workspace_adapter.backend.runqueue import RunQueue
from workspace_adapter.backend.service import BackendService
from workspace_adapter.backend.store import BackendStore
from workspace_adapter.backend.subscriptions import SubscriptionHub
from workspace_adapter.flows.catalog import FlowCatalog
from workspace_adapter.flows.executor import LocalExecutor, StepExecutor

WORKSPACE = Path(sys.executable).with_name("workspace")
SECRET = "test-secret"


def in_process_service(
    root: Path, store: BackendStore, executor: StepExecutor | None = None
) -> BackendService:
    """The daemon's service for the flows under ``root``, in this process, without a socket; its
    run queue starts runs once ``service.queue.serve`` runs in a task group."""
    hub = SubscriptionHub()
    catalog = FlowCatalog(root, recheck_seconds=0)
    queue = RunQueue(
        store=store,
        steps=catalog,
        executor=executor or LocalExecutor(),
        hub=hub,
        workspace_root=root,
        backend_url="ws://127.0.0.1:1",
    )
    return BackendService(store=store, catalog=catalog, queue=queue, hub=hub)


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
        with open(self.stderr_path, "a") as err:
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
                stderr=err,
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

    def call(self, method: str, params: dict[str, object] | None = None) -> object:
        """One JSON-RPC request through the adapter's own client."""
        return anyio.run(lambda: client.call(self.url, method, params))

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])


@contextmanager
def running_backend(
    root: Path, data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Backend]:
    """A started :class:`Backend`, stopped with SIGTERM on the way out."""
    backend = Backend(root, data_dir, *args, env=env).start()
    try:
        yield backend
    finally:
        backend.stop()


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dead_url() -> str:
    """A loopback WebSocket URL nothing listens on."""
    return f"ws://127.0.0.1:{free_port()}"
