"""The Celery executor against the local one, on this machine (``bench/run`` includes it).

    .venv/bin/python bench/bench_celery.py [--json] [--reps N]

Trivial runs per second and dispatch → step-started latency with the local executor, then
with ``--executor celery`` and one and two ``workspace worker`` processes (4 slots each) on a
``redis-server`` on a free loopback port, and one run of the tutorial's harness flow through a
worker. The budget: the Celery executor adds under 20 ms to the dispatch → started p50.
Skipped (exit 0, saying so) without redis-server or the celery extra.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bench_backend  # a sibling: `python bench/bench_celery.py` puts bench/ on sys.path

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = Path(sys.executable).with_name("workspace")
WORKER_SLOTS = 4
LATENCY_BUDGET_MS = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    assert server is not None
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def workers(base: Path, broker: str, count: int, make_root: Any) -> Iterator[list[Path]]:
    procs: list[subprocess.Popen[str]] = []
    roots = []
    try:
        for i in range(count):
            root = make_root(base / f"worker-{i}")
            roots.append(root)
            proc = subprocess.Popen(
                [
                    str(WORKSPACE),
                    "--workspace-root",
                    str(root),
                    "worker",
                    "--broker",
                    broker,
                    "--name",
                    f"bench-{i}",
                    "--concurrency",
                    str(WORKER_SLOTS),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            procs.append(proc)
            assert proc.stdout is not None
            if "ready" not in proc.stdout.readline():
                raise SystemExit("workspace worker did not start")
        yield roots
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGQUIT)  # a cold stop: nothing runs any more
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def backend(root: Path, data: Path, *extra: str) -> Iterator[str]:
    proc, url = bench_backend.start_backend(root, data, *extra, concurrency=16)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def bench_workspace(root: Path) -> Path:
    bench_backend.write_flows(root)
    return root


async def measure(url: str, reps: int, tag: str) -> dict[str, list[float]]:
    failed: list[str] = []
    await bench_backend.runs_per_second(url, 40, f"{tag}-warm", failed)
    out: dict[str, list[float]] = {"runs": [], "started": []}
    for rep in range(reps):
        out["runs"].append(
            await bench_backend.runs_per_second(url, 200, f"{tag}-runs-{rep}", failed)
        )
        out["started"].append(
            await bench_backend.started_latency(url, 25, tag=f"{tag}-stamp-{rep}")
        )
    out["failed"] = [float(len(failed))]
    for problem in failed:
        print(f"  failed run ({tag}): {problem}", file=sys.stderr)
    return out


def harness_run(scratch: Path, broker: str) -> float:
    """Seconds of `workspace run harness-flow` through one worker (v0.1.3: already contained)."""

    def harness_root(root: Path) -> Path:
        root.mkdir(parents=True)
        shutil.copy(REPO / "workspace.toml", root / "workspace.toml")
        shutil.copytree(REPO / "flows", root / "flows")
        subprocess.run(
            [str(WORKSPACE), "--workspace-root", str(root), "harness", "init"],
            check=True,
            capture_output=True,
        )
        return root

    root = harness_root(scratch / "harness-backend")
    with (
        workers(scratch / "harness-workers", broker, 1, harness_root),
        backend(root, scratch / "harness-data", "--executor", "celery", "--broker", broker) as url,
    ):
        began = time.perf_counter()
        done = subprocess.run(
            [
                str(WORKSPACE),
                "--workspace-root",
                str(root),
                "--backend-url",
                url,
                "run",
                "harness-flow",
                "--json",
            ],
            capture_output=True,
            text=True,
        )
        took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"harness-flow through a worker failed: {done.stderr[-2000:]}")
    return took


def collect(reps: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="workspace-bench-celery-") as folder:
        scratch = Path(folder)
        results: dict[str, dict[str, list[float]]] = {}
        with backend(bench_workspace(scratch / "local"), scratch / "local-data") as url:
            results["local"] = asyncio.run(measure(url, reps, "local"))
        with redis_server(scratch) as broker:
            for count in (1, 2):
                base = scratch / f"celery-{count}"
                celery = ("--executor", "celery", "--broker", broker)
                with (
                    workers(base, broker, count, bench_workspace),
                    backend(bench_workspace(base / "backend"), base / "data", *celery) as url,
                ):
                    results[f"{count} worker"] = asyncio.run(measure(url, reps, f"c{count}"))
            harness = harness_run(scratch, broker)
    local_runs = statistics.median(results["local"]["runs"])
    local_started = statistics.median(results["local"]["started"])
    rows: list[dict[str, Any]] = []
    for name, got in results.items():
        runs, started = statistics.median(got["runs"]), statistics.median(got["started"])
        rows.append({"metric": f"runs/s, trivial step, {name}", "value": runs, "unit": "/s"})
        if got["failed"][0]:
            rows.append({"metric": "  runs that failed", "value": got["failed"][0], "unit": ""})
        if name != "local":
            share = runs / local_runs * 100
            rows.append({"metric": "  relative to local", "value": share, "unit": "%"})
        rows.append({"metric": f"dispatch -> started p50, {name}", "value": started, "unit": "ms"})
        if name != "local":
            added = started - local_started
            rows.append(
                {
                    "metric": "  added over local",
                    "value": added,
                    "unit": "ms",
                    "budget": f"< {LATENCY_BUDGET_MS:g} ms",
                    "pass": added < LATENCY_BUDGET_MS,
                }
            )
    rows.append({"metric": "harness-flow through a worker", "value": harness, "unit": "s"})
    return rows


def unavailable() -> str | None:
    """Why this benchmark cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    try:
        import celery  # noqa: F401
    except ImportError:
        return "the celery extra is not installed"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    missing = unavailable()
    if missing is not None:
        print(f"skipped: {missing}")
        return 0
    rows = collect(args.reps)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            mark = "" if "pass" not in row else ("yes" if row["pass"] else "NO")
            value = f"{row['value']:,.1f} {row['unit']}"
            print(f"{row['metric']:<44} {value:>12}  {row.get('budget', ''):<10} {mark}")
    return 0 if all(row.get("pass", True) for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
