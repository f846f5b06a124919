"""Clients that misbehave on the wire: half handshakes, never reading, random frames."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

import websockets
from hypothesis import given, settings
from hypothesis import strategies as st
from support.backend import Backend
from support.waiting import until
from support.wire import http, open_rpc

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def half_handshake(host: str, port: int, variant: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    try:
        if variant == 1:
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")
        elif variant == 2:
            writer.write(UPGRADE)  # never reads the 101
        elif variant == 3:
            writer.write(UPGRADE)
            await reader.readuntil(b"\r\n\r\n")  # then vanishes without a close frame
        elif variant == 4:
            writer.write(bytes.fromhex("160301020001") + os.urandom(64))  # a TLS hello
        elif variant == 5:
            writer.write(UPGRADE[:40])
            # RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_500_connections_dropped_mid_handshake(daemon: Backend) -> None:
    host, port = daemon.url.removeprefix("ws://").rsplit(":", 1)
    baseline = open_fds(daemon.pid)
    for batch in range(5):
        await asyncio.gather(
            *(half_handshake(host, int(port), (batch * 100 + i) % 6) for i in range(100))
        )
    rpc = await open_rpc(daemon.url)
    assert "runs" in await rpc.call("flow.listRuns", {"limit": 1})
    reply = await rpc.call("flow.dispatch", {"event": {"id": "after-500", "type": "demo.event"}})
    assert reply["status"] == "accepted"
    assert http("GET", daemon.http + "/healthz")[0] == 200
    await rpc.ws.close()
    # Every dropped connection is let go (no leaked sockets).
    await until(
        lambda: open_fds(daemon.pid) <= baseline + 5,
        f"the daemon to let the sockets go (baseline {baseline} fds)",
    )


async def test_a_client_that_never_reads_its_replies_is_dropped(daemon: Backend) -> None:
    # Complements tests/backend/test_backend_lifecycle.py (a subscriber that never reads its
    # notifications): here the unread frames are replies to the client's own requests.
    rpc = await open_rpc(daemon.url)
    for i in range(60):
        await rpc.call("flow.dispatch", {"id": f"fill-{i}", "type": "demo.event"})
    greedy = await open_rpc(daemon.url)
    before = daemon.rss_kib()
    request = {"jsonrpc": "2.0", "method": "flow.listRuns", "params": {"limit": 60}}
    peak = before
    try:
        for i in range(2000):
            await greedy.ws.send(json.dumps({**request, "id": i}))
            if i % 100 == 0:
                peak = max(peak, daemon.rss_kib())
    except websockets.ConnectionClosed:
        pass
    # Others are still served while the greedy client's frames pile up (not behind them).
    async with asyncio.timeout(5):
        assert "runs" in await rpc.call("flow.listRuns", {"limit": 1})
    peak = max(peak, daemon.rss_kib())
    assert peak - before < 32 * 1024, (before, peak)
    # When the greedy client finally reads: its replies waited for room (a reply is never
    # dropped for being large) and what came past the in-flight cap was refused as overloaded;
    # unless the unread refusals alone outgrew the outbox, which closes it with 1008.
    answered: set[int] = set()
    try:
        async with asyncio.timeout(20):
            while len(answered) < 2000:
                message = json.loads(await greedy.ws.recv())
                if "id" in message:
                    error = message.get("error")
                    assert error is None or error["code"] == -32001, message
                    answered.add(message["id"])
    except websockets.ConnectionClosed:
        assert greedy.ws.close_code == 1008
    else:
        assert answered == set(range(2000))
        await greedy.ws.close()
    await rpc.ws.close()


# --- random frames ----------------------------------------------------------------------------

METHODS = [
    "workspace.initialize",
    "flow.dispatch",
    "flow.replay",
    "flow.listEvents",
    "flow.getEvent",
    "flow.listRuns",
    "flow.getRun",
    "flow.cancelRun",
    "flow.subscribe",
    "flow.unsubscribe",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "event": VALUES
        | st.fixed_dictionaries(
            {}, optional={"id": VALUES, "type": st.sampled_from(["demo.event", "x"]) | VALUES}
        ),
        "eventId": VALUES,
        "runId": VALUES,
        "subscriptionId": VALUES,
        "limit": VALUES,
        "status": VALUES,
        "type": VALUES,
        "wait": VALUES,
    },
)
REQUESTS = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.just("2.0") | VALUES,
        "id": st.integers() | st.text(max_size=8) | VALUES,
        "method": st.sampled_from(METHODS) | VALUES,
        "params": PARAMS | VALUES,
    },
)
FRAMES = (
    REQUESTS.map(json.dumps)
    | st.lists(REQUESTS, max_size=3).map(json.dumps)
    | VALUES.map(json.dumps)
    | st.text(max_size=64)
    | st.binary(max_size=64)
)
ERROR_CODES = {-32700, -32600, -32601, -32602, -32001}


def check_message(message: Any) -> None:
    assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", message
    if "id" not in message:
        assert isinstance(message.get("method"), str), message
        return
    assert ("result" in message) != ("error" in message), message
    if "error" in message:
        error = message["error"]
        # -32603 would mean an unexpected exception: random input must never cause one.
        assert error["code"] in ERROR_CODES, message
        assert isinstance(error["message"], str) and error["message"], message


async def throw(url: str, frame: str | bytes) -> None:
    rpc = await open_rpc(url)
    try:
        await rpc.ws.send(frame)
        await rpc.ws.send(
            json.dumps({"jsonrpc": "2.0", "id": "sentinel", "method": "flow.listRuns"})
        )
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await rpc.ws.recv())
                check_message(message)
                if message.get("id") == "sentinel":
                    assert "result" in message, message
                    break
    except websockets.ConnectionClosed:
        # Closing is allowed, but cleanly: a close frame with a code that says why.
        assert rpc.ws.protocol.close_rcvd is not None, "closed without a close frame"
        assert rpc.ws.close_code in (1003, 1007, 1008, 1009), rpc.ws.close_code
    finally:
        await rpc.ws.close()
    other = await open_rpc(url)
    assert "runs" in await other.call("flow.listRuns", {"limit": 1})
    await other.ws.close()


@settings(max_examples=50, deadline=None, derandomize=True)
@given(frame=FRAMES)
def test_random_frames_are_answered_or_closed_cleanly(shared_daemon: Backend, frame: Any) -> None:
    asyncio.run(throw(shared_daemon.url, frame))
    assert shared_daemon.proc is not None and shared_daemon.proc.poll() is None


def test_the_shared_daemon_wrote_no_traceback(shared_daemon: Backend, tmp_path: Path) -> None:
    assert "Traceback" not in shared_daemon.stderr()
