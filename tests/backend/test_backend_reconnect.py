"""The long-lived adapter: a backend restart costs a reconnect with backoff, not the session."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest
from support.backend import Backend, free_port
from support.flows import write_flows

from workspace_adapter.base.errors import BackendUnreachable
from workspace_adapter.client import ReconnectingClient


async def test_requests_survive_a_backend_restart(tmp_path: Path) -> None:
    root = write_flows(tmp_path / "ws")
    port = free_port()
    first = Backend(root, tmp_path / "data", "--port", str(port)).start()
    client = ReconnectingClient(first.url, initial_backoff=0.05, max_backoff=0.2)
    try:
        reply = await client.request("flow.listEvents", {})
        assert reply == {"events": []}
        assert first.stop(signal.SIGTERM) == 0

        # The backend is down: a bounded connect gives up with the §10 error.
        await client.close()
        with pytest.raises(BackendUnreachable):
            await client.connect(attempts=2)

        second = Backend(root, tmp_path / "data", "--port", str(port)).start()
        try:
            event = {"id": "after-restart", "type": "demo.event"}
            with anyio.fail_after(20):
                reply = await client.request("flow.dispatch", {"event": event})
            assert reply["status"] == "accepted" and reply["matched"] == 1
        finally:
            await client.close()
            assert second.stop(signal.SIGTERM) == 0
    finally:
        first.stop(signal.SIGTERM)


async def test_a_dropped_connection_is_replaced_on_the_next_request(tmp_path: Path) -> None:
    root = write_flows(tmp_path / "ws")
    port = free_port()
    first = Backend(root, tmp_path / "data", "--port", str(port)).start()
    client = ReconnectingClient(first.url, initial_backoff=0.05, max_backoff=0.2)
    second: Backend | None = None
    try:
        assert (await client.request("flow.listRuns", {}))["runs"] == []
        # Restart behind the client's back: its open connection is dead, the next request
        # notices, reconnects (retrying while the new backend comes up) and succeeds.
        assert first.stop(signal.SIGTERM) == 0
        second = Backend(root, tmp_path / "data", "--port", str(port)).start()
        with anyio.fail_after(20):
            reply = await client.request("flow.listEvents", {})
        assert reply == {"events": []}
    finally:
        await client.close()
        if second is not None:
            assert second.stop(signal.SIGTERM) == 0
