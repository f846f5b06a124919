"""A/B of no-match dispatch throughput: two source trees, interleaved runs, medians.

    .venv/bin/python bench/ab_dispatch.py BASE_SRC [--rounds 5] [--clients 8] [--seconds 4]

``BASE_SRC`` is a ``src`` folder to compare against (a copy of the package as it was); the
other side is this checkout. Runs alternate so a noisy neighbour hurts both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import bench_backend  # a sibling: `python bench/ab_dispatch.py` puts bench/ on sys.path

REPO_SRC = Path(__file__).resolve().parents[1] / "src"


def one_run(src: Path, clients: int, seconds: float) -> dict[str, float]:
    os.environ["PYTHONPATH"] = str(src)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch) / "ws"
            bench_backend.write_flows(root)
            proc, url = bench_backend.start_backend(root, Path(scratch) / "data")
            try:
                asyncio.run(bench_backend.dispatch_throughput(url, clients, 1.0, "warm"))
                return asyncio.run(bench_backend.dispatch_throughput(url, clients, seconds, "ab"))
            finally:
                proc.terminate()
                proc.wait(15)
    finally:
        os.environ.pop("PYTHONPATH", None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    sides = {"base": args.base.resolve(), "this": REPO_SRC}
    got: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, src in sides.items():
            got[name].append(one_run(src, args.clients, args.seconds))
    for name, runs in got.items():
        rates = [r["per_second"] for r in runs]
        p50 = statistics.median(r["p50_ms"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        print(
            f"{name}: {statistics.median(rates):.0f}/s median of {[round(x) for x in rates]}, "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({args.clients} clients)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
