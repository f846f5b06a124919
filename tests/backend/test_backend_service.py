"""BackendService in-process: its method table, initialize, and the no-match dispatch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from support.backend import in_process_service
from support.flows import write_flows

from workspace_adapter import protocol as rpc
from workspace_adapter.backend.service import METHODS, BackendService
from workspace_adapter.backend.store import BackendStore


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[BackendService]:
    store = BackendStore(tmp_path / "data")
    yield in_process_service(write_flows(tmp_path / "ws"), store)
    store.close()


async def test_initialize_advertises_the_method_table(service: BackendService) -> None:
    result = await service.call("workspace.initialize", {})
    advertised = result["capabilities"]["workspaceMethods"]
    assert advertised == sorted(m for m in METHODS if m.startswith("flow."))
    assert "flow.subscribe" in advertised and "workspace.initialize" not in advertised


async def test_unknown_methods_are_method_not_found(service: BackendService) -> None:
    with pytest.raises(rpc.RpcFault) as caught:
        await service.call("flow.nope", {})
    assert caught.value.code == rpc.METHOD_NOT_FOUND


async def test_params_are_checked_by_the_table(service: BackendService) -> None:
    with pytest.raises(rpc.RpcFault) as caught:
        await service.call("flow.getRun", {"runId": 5})
    assert (caught.value.code, caught.value.data) == (rpc.INVALID_PARAMS, {"field": "runId"})


async def test_a_no_match_dispatch_is_stored_without_runs(service: BackendService) -> None:
    reply = await service.call("flow.dispatch", {"event": {"id": "nm-1", "type": "no.flow"}})
    assert msgspec.to_builtins(reply) == {
        "status": "accepted",
        "eventId": "nm-1",
        "runIds": [],
        "matched": 0,
        "idempotent": False,
    }
    assert b'"runs"' not in rpc.encode_result(1, reply)  # only when the caller waits
    again = await service.call("flow.dispatch", {"id": "nm-1", "type": "no.flow"})
    assert (again.status, again.idempotent) == ("duplicate", True)
    got = await service.call("flow.getEvent", {"eventId": "nm-1"})
    assert got.event["type"] == "no.flow" and got.runs == []


async def test_subscriptions_need_a_websocket(service: BackendService) -> None:
    with pytest.raises(rpc.RpcFault) as caught:
        await service.call("flow.subscribe", {})
    assert caught.value.code == rpc.INVALID_REQUEST
