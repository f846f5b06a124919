"""The WebSocket JSON-RPC against a real daemon: dispatch, idempotency, bad input, streams."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import websockets
from support.backend import Backend
from support.waiting import until
from support.wire import Rpc, open_rpc


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_initialize_and_dispatch_with_wait(backend: Backend) -> None:
    rpc = await open_rpc(backend.url)
    result = await rpc.call("workspace.initialize", {"clientInfo": {"name": "t"}})
    assert result["ok"] is True and result["capabilities"]["runStreaming"] is True
    event_id = new_id("wait")
    await rpc.call("flow.subscribe", {"eventId": event_id})
    reply = await rpc.call(
        "flow.dispatch", {"event": {"id": event_id, "type": "demo.event"}, "wait": True}
    )
    assert reply["status"] == "accepted" and reply["matched"] == 1
    (run,) = reply["runs"]
    assert run["status"] == "completed" and run["resultStatus"] == "completed"
    assert json.loads(run["resultJson"])["result"] == {"status": "completed"}
    line = await rpc.note("flow.run.output", lambda p: p["runId"] == run["id"])
    assert line["params"] == {"runId": run["id"], "stream": "stdout", "line": "hello"}
    updated = await rpc.note("flow.run.updated", lambda p: p["run"]["status"] == "completed")
    assert updated["params"]["run"]["id"] == run["id"]
    got = await rpc.call("flow.getEvent", {"eventId": event_id})
    assert got["event"]["id"] == event_id and got["event"]["receivedAt"]
    assert [r["id"] for r in got["runs"]] == [run["id"]]
    await rpc.ws.close()


async def test_same_id_twice_runs_once(backend: Backend) -> None:
    rpc = await open_rpc(backend.url)
    event = {"id": new_id("dup"), "type": "demo.event"}
    first = await rpc.call("flow.dispatch", {"event": event, "wait": True})
    second = await rpc.call("flow.dispatch", {"event": event, "wait": True})
    assert second["status"] == "duplicate" and second["idempotent"] is True
    # codex-flows counts what the duplicate itself matched: nothing.
    assert second["runIds"] == first["runIds"] and second["matched"] == 0
    runs = await rpc.call("flow.listRuns", {"eventId": event["id"]})
    assert len(runs["runs"]) == 1
    await rpc.ws.close()


async def test_same_id_from_two_clients_at_once(backend: Backend) -> None:
    a, b = await open_rpc(backend.url), await open_rpc(backend.url)
    event = {"id": new_id("race"), "type": "demo.event"}
    sent = [[await c.send("flow.dispatch", {"event": event}) for _ in range(3)] for c in (a, b)]

    async def collect(client: Rpc, ids: list[int]) -> list[dict[str, Any]]:
        return [(await client.reply(i))["result"] for i in ids]

    per_client = await asyncio.gather(collect(a, sent[0]), collect(b, sent[1]))
    replies = per_client[0] + per_client[1]
    statuses = sorted(r["status"] for r in replies)
    assert statuses == ["accepted"] + ["duplicate"] * 5
    assert len({tuple(r["runIds"]) for r in replies}) == 1
    runs = await a.call("flow.listRuns", {"eventId": event["id"]})
    assert len(runs["runs"]) == 1
    await a.ws.close()
    await b.ws.close()


async def test_payload_failing_the_schema_matches_nothing(backend: Backend) -> None:
    rpc = await open_rpc(backend.url)
    event_id = new_id("schema")
    bad = {"id": event_id, "type": "schema.event", "payload": {"name": 42}}
    reply = await rpc.call("flow.dispatch", {"event": bad})
    assert (reply["status"], reply["matched"], reply["runIds"]) == ("accepted", 0, [])
    assert (await rpc.call("flow.listRuns", {"eventId": event_id}))["runs"] == []
    good = {"id": new_id("schema"), "type": "schema.event", "payload": {"name": "Ada", "x": 1}}
    assert (await rpc.call("flow.dispatch", {"event": good, "wait": True}))["matched"] == 1
    await rpc.ws.close()


async def test_invalid_event_is_not_stored_and_a_retry_works(backend: Backend) -> None:
    rpc = await open_rpc(backend.url)
    missing_id = await rpc.reply(await rpc.send("flow.dispatch", {"event": {"type": "demo.event"}}))
    assert missing_id["error"]["code"] == -32602
    assert missing_id["error"]["data"] == {"field": "event.id"}
    assert "id" in missing_id["error"]["message"]
    event_id = new_id("retry")
    missing_type = await rpc.reply(await rpc.send("flow.dispatch", {"event": {"id": event_id}}))
    assert missing_type["error"]["data"] == {"field": "event.type"}
    bad_payload = {"id": event_id, "type": "demo.event", "payload": [1]}
    assert "error" in await rpc.reply(await rpc.send("flow.dispatch", {"event": bad_payload}))
    reply = await rpc.call("flow.dispatch", {"id": event_id, "type": "demo.event"})
    assert reply["status"] == "accepted" and reply["matched"] == 1
    await rpc.ws.close()


async def test_bad_frames_get_errors_and_the_connection_lives(backend: Backend) -> None:
    rpc = await open_rpc(backend.url)
    await rpc.ws.send("{not json")
    assert (await rpc.read())["error"]["code"] == -32700
    await rpc.ws.send('[{"jsonrpc":"2.0","id":1,"method":"flow.listRuns"}]')
    reply = await rpc.read()
    assert (reply["id"], reply["error"]["code"]) == (None, -32600)
    await rpc.ws.send("42")
    assert (await rpc.read())["error"]["code"] == -32600
    unknown = await rpc.reply(await rpc.send("flow.fly", {}))
    assert unknown["error"]["code"] == -32601
    bad = await rpc.reply(await rpc.send("flow.getRun", {"runId": 3}))
    assert bad["error"]["code"] == -32602 and bad["error"]["data"] == {"field": "runId"}
    missing = await rpc.reply(await rpc.send("flow.getRun", {"runId": "run_nope"}))
    assert missing["error"]["code"] == -32602
    assert "runs" in await rpc.call("flow.listRuns", {"limit": 1})
    await rpc.ws.close()


async def test_oversized_frame_closes_with_1009_others_unaffected(backend: Backend) -> None:
    victim = await open_rpc(backend.url, max_size=None)
    other = await open_rpc(backend.url)
    await victim.ws.send(
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "x", "p": "a" * (2 << 20)})
    )
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await victim.ws.recv()
    assert victim.ws.close_code == 1009
    assert "runs" in await other.call("flow.listRuns", {"limit": 1})
    await other.ws.close()


async def test_requests_on_one_connection_run_concurrently(backend: Backend) -> None:
    rpc = await open_rpc(backend.url)
    event_id = new_id("slow")
    waiting = await rpc.send(
        "flow.dispatch", {"event": {"id": event_id, "type": "sleep.event"}, "wait": True}
    )
    # The waiting dispatch must not hold up the next requests on the same socket.

    async def listed() -> list[dict[str, Any]]:
        reply = await rpc.call("flow.listRuns", {"eventId": event_id})
        runs: list[dict[str, Any]] = reply["runs"]
        return runs

    (run,) = await until(listed, "the waiting dispatch's run to be listed")
    canceled = await rpc.call("flow.cancelRun", {"runId": run["id"]})
    assert canceled["run"]["status"] == "canceled"
    reply = await rpc.reply(waiting)
    assert reply["result"]["runs"][0]["status"] == "canceled"
    await rpc.ws.close()


async def test_replay_makes_new_runs(backend: Backend) -> None:
    rpc = await open_rpc(backend.url)
    event_id = new_id("replay")
    first = await rpc.call("flow.dispatch", {"event": {"id": event_id, "type": "demo.event"}})
    replays = [await rpc.call("flow.replay", {"eventId": event_id, "wait": True}) for _ in (1, 2)]
    ids = [r["runIds"][0] for r in replays]
    assert all(i.endswith("_replay") for i in ids) and len(set(ids)) == 2
    assert ids[0] not in first["runIds"]
    assert replays[0]["runs"][0]["status"] == "completed"
    assert replays[0]["runs"][0]["replay"] is True
    unknown = await rpc.reply(await rpc.send("flow.replay", {"eventId": "no-such-event"}))
    assert unknown["error"]["code"] == -32602
    events = await rpc.call("flow.listEvents", {"type": "demo.event", "limit": 1000})
    assert event_id in [e["id"] for e in events["events"]]
    await rpc.ws.close()


async def test_subscribe_filters_and_unsubscribe(backend: Backend) -> None:
    rpc = await open_rpc(backend.url)
    mine, other = new_id("mine"), new_id("other")
    sub = await rpc.call("flow.subscribe", {"eventId": mine})
    await rpc.call("flow.dispatch", {"event": {"id": other, "type": "demo.event"}, "wait": True})
    await rpc.call("flow.dispatch", {"event": {"id": mine, "type": "demo.event"}, "wait": True})
    await rpc.note("flow.run.updated", lambda p: p["run"]["status"] == "completed")
    assert all(n["params"].get("run", {}).get("eventId", mine) == mine for n in rpc.notes)
    removed = await rpc.call("flow.unsubscribe", {"subscriptionId": sub["subscriptionId"]})
    assert removed["removed"] == [sub["subscriptionId"]]
    await rpc.ws.close()


async def test_replies_larger_than_the_outbox_are_sent_not_closed(backend: Backend) -> None:
    # Runs with long output tails (~64 KiB per stream, twice for codex-flows' keys): a list of
    # them is several MiB, more than a subscriber's 1 MiB outbox, yet the client reads it.
    rpc = await open_rpc(backend.url, max_size=None)
    await rpc.call("flow.subscribe", {"eventId": new_id("elsewhere")})
    prefix = new_id("tails")
    waits = [
        await rpc.send(
            "flow.dispatch",
            {"event": {"id": f"{prefix}-{i}", "type": "tails.event"}, "wait": True},
        )
        for i in range(8)
    ]
    for request_id in waits:
        reply = await rpc.reply(request_id)
        assert reply["result"]["runs"][0]["status"] == "completed", reply
    # Several large replies in flight on one connection at once.
    asked = [
        await rpc.send("flow.listRuns", {"status": "completed", "limit": 50}) for _ in range(3)
    ]
    for request_id in asked:
        runs = (await rpc.reply(request_id))["result"]["runs"]
        assert sum(len(json.dumps(r)) for r in runs) > 2 * 1024 * 1024
    assert "runs" in await rpc.call("flow.listRuns", {"limit": 1})
    await rpc.ws.close()


async def test_a_request_that_outlives_its_timeout_is_a_clear_error(backend: Backend) -> None:
    from workspace_adapter.base.errors import UserError
    from workspace_adapter.client import RequestTimeout, open_client

    client = await open_client(backend.url)
    event_id = new_id("timeout")
    event = {"id": event_id, "type": "sleep.event"}
    with pytest.raises(RequestTimeout) as late:
        await client.request("flow.dispatch", {"event": event, "wait": True}, timeout=0.5)
    assert isinstance(late.value, TimeoutError) and isinstance(late.value, UserError)
    assert "did not answer flow.dispatch within 0.5s" in late.value.message
    runs = await client.request("flow.listRuns", {"eventId": event_id})
    for run in runs["runs"]:
        await client.request("flow.cancelRun", {"runId": run["id"]})
    await client.close()


async def test_subscriptions_per_connection_are_capped(backend: Backend) -> None:
    from workspace_adapter.backend.subscriptions import MAX_SUBSCRIPTIONS_PER_CONNECTION

    rpc = await open_rpc(backend.url)
    ids: list[str] = []
    for start in range(0, MAX_SUBSCRIPTIONS_PER_CONNECTION, 128):  # under the in-flight cap
        count = min(128, MAX_SUBSCRIPTIONS_PER_CONNECTION - start)
        asked = [
            await rpc.send("flow.subscribe", {"eventId": f"cap-{start + i}"}) for i in range(count)
        ]
        ids += [(await rpc.reply(i))["result"]["subscriptionId"] for i in asked]
    refused = await rpc.reply(await rpc.send("flow.subscribe", {}))
    assert refused["error"]["code"] == -32001 and "unsubscribe" in refused["error"]["message"]
    await rpc.call("flow.unsubscribe", {"subscriptionId": ids[0]})
    assert (await rpc.call("flow.subscribe", {}))["subscriptionId"]
    # Another connection has its own allowance.
    other = await open_rpc(backend.url)
    assert (await other.call("flow.subscribe", {}))["subscriptionId"]
    await other.ws.close()
    await rpc.ws.close()
