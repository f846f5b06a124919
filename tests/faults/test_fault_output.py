"""A burst of output reaches every subscriber that reads, and only a silent one is dropped.

The step writes its output to files and never waits; the backend reads them no faster than the
connections that hear the run take the lines. (A subscriber that never reads is closed with
1008: ``tests/backend/test_backend_lifecycle.py::test_a_subscriber_that_never_reads_is_closed``.)
"""

from __future__ import annotations

import asyncio
import json

import websockets
from support.backend import Backend

LINES = 25_000  # 401 bytes each: a 10 MB burst


async def listen(url: str, ready: asyncio.Event, count: list[int]) -> int | None:
    """Subscribe to everything and count output lines until the flood run ends; the close code
    if the daemon closed us first, else None."""
    async with websockets.connect(url, max_size=None, max_queue=None) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "flow.subscribe"}))
        while json.loads(await ws.recv()).get("id") != 1:
            pass  # the connected notification comes first
        ready.set()
        try:
            async for frame in ws:
                message = json.loads(frame)
                method = message.get("method")
                if method == "flow.run.output":
                    count[0] += 1
                elif method == "flow.run.updated" and message["params"]["run"]["status"] in (
                    "completed",
                    "failed",
                ):
                    return None
        except websockets.ConnectionClosed:
            pass
        return ws.close_code


async def test_twenty_reading_subscribers_get_a_10_mb_burst_whole(shared_daemon: Backend) -> None:
    counts = [[0] for _ in range(20)]
    readies = [asyncio.Event() for _ in counts]
    listeners = [
        asyncio.create_task(listen(shared_daemon.url, ready, count))
        for ready, count in zip(readies, counts, strict=True)
    ]
    for ready in readies:
        await ready.wait()
    async with websockets.connect(shared_daemon.url) as ws:
        flood = {"id": "burst-10mb", "type": "flood.event", "payload": {"lines": LINES}}
        await ws.send(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "flow.dispatch", "params": flood})
        )
        closed = await asyncio.wait_for(asyncio.gather(*listeners), 120)
    assert closed == [None] * 20, "a subscriber that reads was closed"
    # Every line, and the FLOW_RESULT line, reached every one of them.
    assert [c[0] for c in counts] == [LINES + 1] * 20
