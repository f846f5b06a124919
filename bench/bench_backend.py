"""Backend benchmarks against a real daemon (SPEC §11); prints metric, value, budget, pass.

    .venv/bin/python bench/bench_backend.py [--json]
    .venv/bin/python bench/bench_backend.py --dispatch-only [--rounds 5]

Starts ``workspace backend --port 0`` on a scratch workspace with two trivial flows, then
measures: no-match dispatch throughput and latency at 1 and 8 clients, runs/s of a trivial
``command`` step, dispatch → step-started latency, idle RSS and RSS with 200 idle clients.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

WORKSPACE = Path(sys.executable).with_name("workspace")

TRIVIAL = """
name = "bench-trivial"
[[steps]]
name = "noop"
runner = "command"
command = ["printf", "FLOW_RESULT {\\"status\\":\\"completed\\"}\\n"]
concurrency = 8
[steps.trigger]
type = "bench.trivial"
"""
STAMP = """
name = "bench-stamp"
[[steps]]
name = "stamp"
runner = "command"
command = ["date", "+%s.%N"]
[steps.trigger]
type = "bench.stamp"
"""


class Client:
    """A minimal pipelining-free JSON-RPC client: one request at a time per connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    @classmethod
    async def open(cls, url: str) -> Client:
        ws = await connect(url, compression=None, max_size=None)
        await ws.recv()  # the "connected" notification
        return cls(ws)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        request_id = next(self.ids)
        await self.ws.send(
            json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        )
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") == request_id:
                if "error" in message:
                    raise RuntimeError(message["error"])
                return message["result"]


def write_flows(root: Path) -> None:
    """The two trivial flows the backend benchmarks dispatch to, under ``root/flows``."""
    for name, manifest in (("bench-trivial", TRIVIAL), ("bench-stamp", STAMP)):
        (root / "flows" / name).mkdir(parents=True, exist_ok=True)
        (root / "flows" / name / "flow.toml").write_text(manifest)


def start_backend(
    root: Path, data: Path, *extra: str, concurrency: int = 8
) -> tuple[subprocess.Popen[str], str]:
    """``workspace backend --port 0`` on ``root`` and ``data`` (plus ``extra`` flags); its URL."""
    proc = subprocess.Popen(
        [
            str(WORKSPACE),
            "backend",
            "--port",
            "0",
            "--cwd",
            str(root),
            "--data-dir",
            str(data),
            "--concurrency",
            str(concurrency),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # its JSON log lines: written as in production, not shown
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("workspace backend listening on "):
        raise SystemExit(f"backend did not start: {line!r}")
    return proc, line.split()[-1]


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def dispatch_throughput(url: str, clients: int, seconds: float, tag: str) -> dict[str, float]:
    conns = [await Client.open(url) for _ in range(clients)]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = itertools.count()

    async def loop(client: Client) -> None:
        while time.perf_counter() < deadline:
            event = {"id": f"{tag}-{next(counter)}", "type": "bench.nomatch", "payload": {}}
            started = time.perf_counter()
            await client.call("flow.dispatch", {"event": event})
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        await c.ws.close()
    return {
        "per_second": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


async def runs_per_second(
    url: str, count: int, tag: str = "runs", failed: list[str] | None = None
) -> float:
    """Trivial runs ended per second; a run that does not complete stops the bench, or, given
    ``failed``, is noted there (``id: error``) and counted."""
    watcher = await Client.open(url)
    await watcher.call("flow.subscribe", {})
    sender = await Client.open(url)
    started = time.perf_counter()
    for i in range(count):
        await sender.call("flow.dispatch", {"event": {"id": f"{tag}-{i}", "type": "bench.trivial"}})
    done = 0
    while done < count:
        message = json.loads(await watcher.ws.recv())
        if message.get("method") == "flow.run.updated":
            run = message["params"]["run"]
            if run["status"] in ("completed", "failed", "canceled"):
                if run["status"] != "completed":
                    if failed is None:
                        raise RuntimeError(run)
                    failed.append(f"{run['id']}: {run['error']}")
                done += 1
    elapsed = time.perf_counter() - started
    await watcher.ws.close()
    await sender.ws.close()
    return count / elapsed


async def started_latency(url: str, count: int, tag: str = "stamp") -> float:
    client = await Client.open(url)
    await client.call("flow.subscribe", {})
    samples: list[float] = []
    for i in range(count):
        sent = time.time()
        await client.call("flow.dispatch", {"event": {"id": f"{tag}-{i}", "type": "bench.stamp"}})
        while True:
            message = json.loads(await client.ws.recv())
            if message.get("method") == "flow.run.output":
                samples.append(float(message["params"]["line"]) - sent)
                break
        await asyncio.sleep(0.02)
    await client.ws.close()
    return statistics.median(samples) * 1000


async def idle_clients(url: str, pid: int, count: int) -> tuple[int, float]:
    before = rss_kib(pid)
    conns = [await connect(url, compression=None) for _ in range(count)]
    for ws in conns:
        await ws.recv()
    await asyncio.sleep(0.5)
    after = rss_kib(pid)
    for ws in conns:
        await ws.close()
    return after, (after - before) / count


async def dispatch_rounds(rounds: int) -> int:
    """Only the no-match dispatch numbers, each round on a fresh daemon; prints medians."""
    got: dict[str, list[dict[str, float]]] = {"1 client": [], "8 clients": []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch) / "ws"
            write_flows(root)
            proc, url = start_backend(root, Path(scratch) / "data")
            try:
                await dispatch_throughput(url, 8, 1.0, "warm")
                got["1 client"].append(await dispatch_throughput(url, 1, 3.0, "one"))
                got["8 clients"].append(await dispatch_throughput(url, 8, 4.0, "eight"))
            finally:
                proc.terminate()
                proc.wait(15)
    for name, runs in got.items():
        rates = [round(r["per_second"]) for r in runs]
        p50 = statistics.median(r["p50_ms"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        print(
            f"{name}: {statistics.median(rates):.0f}/s (rounds {rates}), "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )
    return 0


async def main(as_json: bool) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "ws"
        write_flows(root)
        proc, url = start_backend(root, Path(scratch) / "data")
        try:
            await asyncio.sleep(0.5)
            idle = rss_kib(proc.pid)
            _, per_client = await idle_clients(url, proc.pid, 200)
            one = await dispatch_throughput(url, 1, 3.0, "one")
            eight = await dispatch_throughput(url, 8, 4.0, "eight")
            runs = await runs_per_second(url, 600)
            latency = await started_latency(url, 40)
        finally:
            proc.terminate()
            proc.wait(15)
    rows = [
        ("dispatch/s, no match, 1 client", one["per_second"], None),
        ("dispatch p50 ms, 1 client", one["p50_ms"], None),
        ("dispatch p99 ms, 1 client", one["p99_ms"], None),
        ("dispatch/s, no match, 8 clients", eight["per_second"], (">=", 2000.0)),
        ("dispatch p50 ms, 8 clients", eight["p50_ms"], None),
        ("dispatch p99 ms, 8 clients", eight["p99_ms"], ("<", 20.0)),
        ("runs/s, trivial command step", runs, (">=", 150.0)),
        ("dispatch -> step started p50 ms", latency, ("<", 30.0)),
        ("idle RSS MB", idle / 1024, ("<", 60.0)),
        ("RSS per idle client KiB (200)", per_client, ("<", 80.0)),
    ]
    table = []
    for metric, value, budget in rows:
        ok = None
        if budget is not None:
            ok = value >= budget[1] if budget[0] == ">=" else value < budget[1]
        table.append(
            {
                "metric": metric,
                "value": round(value, 2),
                "budget": f"{budget[0]} {budget[1]:g}" if budget else "",
                "pass": ok,
            }
        )
    if as_json:
        print(json.dumps(table, indent=2))
    else:
        print(f"{'metric':<36} {'value':>10}  {'budget':<10} pass")
        for row in table:
            mark = "" if row["pass"] is None else ("yes" if row["pass"] else "NO")
            print(f"{row['metric']:<36} {row['value']:>10}  {row['budget']:<10} {mark}")
    return 0 if all(r["pass"] is not False for r in table) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--dispatch-only", action="store_true", help="only no-match dispatch")
    parser.add_argument("--rounds", type=int, default=5, help="rounds for --dispatch-only")
    args = parser.parse_args()
    if args.dispatch_only:
        sys.exit(asyncio.run(dispatch_rounds(args.rounds)))
    sys.exit(asyncio.run(main(args.json)))
