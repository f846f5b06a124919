"""The daemon's memory under bursts that come and go; prints metric, value, budget, pass.

    .venv/bin/python bench/bench_memory.py [--clients 2000] [--events 24] [--json]

Starts ``workspace backend --port 0`` on a scratch workspace and measures its RSS:

* idle, then after ``--clients`` WebSocket clients connected (``--wave`` at a time), each made one
  call, and all left: the RSS once they are gone, against idle (budget: within 10 MB);
* the growth while four clients list ``--events`` events of 1 MB each at once, over the
  WebSocket (``flow.listEvents``) and over HTTP (``GET /events``), ``limit`` 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

WORKSPACE = Path(sys.executable).with_name("workspace")


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])


async def settle(pid: int, seconds: float = 3.0) -> int:
    """The RSS ``seconds`` from now: the daemon hands memory back a second after a burst."""
    await asyncio.sleep(seconds)
    return rss_kib(pid)


async def one_client(url: str, index: int) -> None:
    async with connect(url, compression=None, max_size=None) as ws:
        await ws.recv()  # the "connected" notification
        frame = {"jsonrpc": "2.0", "id": index, "method": "flow.listRuns", "params": {"limit": 1}}
        await ws.send(json.dumps(frame))
        await ws.recv()


async def clients_come_and_go(url: str, pid: int, count: int, wave: int) -> tuple[int, int, int]:
    """(idle, peak, after) RSS in KiB around ``count`` clients that connect, call and leave,
    ``wave`` of them at a time."""
    idle = await settle(pid)
    peak = idle
    for start in range(0, count, wave):
        await asyncio.gather(*(one_client(url, i) for i in range(start, min(count, start + wave))))
        peak = max(peak, rss_kib(pid))
    after = await settle(pid, 5.0)
    return idle, peak, after


async def call(url: str, method: str, params: dict[str, Any]) -> int:
    async with connect(url, compression=None, max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        return len(await ws.recv())


def http_get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=120) as response:
        return len(response.read())


async def parallel_lists(url: str, http: str, pid: int) -> tuple[int, int, int, int]:
    """(WS growth, WS reply bytes, HTTP growth, HTTP reply bytes): four list calls at once."""
    before = await settle(pid)
    peak = before
    sizes: list[int] = []

    async def watch(task: asyncio.Future[list[int]]) -> None:
        nonlocal peak
        while not task.done():
            peak = max(peak, rss_kib(pid))
            await asyncio.sleep(0.01)

    params = {"limit": 200}
    ws_calls = asyncio.gather(*(call(url, "flow.listEvents", params) for _ in range(4)))
    await asyncio.gather(ws_calls, watch(ws_calls))
    sizes = ws_calls.result()
    ws_growth = peak - before
    before = await settle(pid)
    peak = before
    loop = asyncio.get_running_loop()
    http_calls = asyncio.gather(
        *(loop.run_in_executor(None, http_get, f"{http}/events?limit=200") for _ in range(4))
    )
    await asyncio.gather(http_calls, watch(http_calls))
    return ws_growth, max(sizes), peak - before, max(http_calls.result())


async def fill(url: str, events: int) -> None:
    blob = "x" * 480_000  # stored twice (payload and raw): about 1 MB per event record
    async with connect(url, compression=None, max_size=None) as ws:
        await ws.recv()
        for i in range(events):
            event = {"id": f"big-{i}", "type": "bench.big", "payload": {"blob": blob}}
            frame = {"jsonrpc": "2.0", "id": i, "method": "flow.dispatch", "params": event}
            await ws.send(json.dumps(frame))
            await ws.recv()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--wave", type=int, default=500, help="clients connected at once")
    parser.add_argument("--events", type=int, default=24)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "flows").mkdir()
        proc = subprocess.Popen(
            [str(WORKSPACE), "backend", "--port", "0", "--cwd", str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[-1]
            http = "http://" + url.removeprefix("ws://")
            idle, peak, after = asyncio.run(
                clients_come_and_go(url, proc.pid, args.clients, args.wave)
            )
            asyncio.run(fill(url, args.events))
            ws_growth, ws_bytes, http_growth, http_bytes = asyncio.run(
                parallel_lists(url, http, proc.pid)
            )
        finally:
            proc.terminate()
            proc.wait(15)
    rows: list[tuple[str, float, tuple[str, float] | None]] = [
        ("idle RSS MB", idle / 1024, None),
        (f"peak RSS MB with {args.clients} clients", peak / 1024, None),
        (f"RSS after {args.clients} clients left, over idle MB", (after - idle) / 1024, ("<", 10)),
        ("4 x flow.listEvents limit 200: RSS growth MB", ws_growth / 1024, ("<", 64)),
        ("flow.listEvents reply MB", ws_bytes / 1024 / 1024, None),
        ("4 x GET /events limit 200: RSS growth MB", http_growth / 1024, ("<", 64)),
        ("GET /events reply MB", http_bytes / 1024 / 1024, None),
    ]
    if args.json:
        print(json.dumps([{"metric": m, "value": round(v, 1)} for m, v, _ in rows]))
        return 0
    failed = False
    for metric, value, budget in rows:
        verdict = ""
        if budget is not None:
            ok = value < budget[1]
            failed |= not ok
            verdict = f"{budget[0]} {budget[1]:<6} {'pass' if ok else 'FAIL'}"
        print(f"{metric:<52} {value:>9.1f}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
