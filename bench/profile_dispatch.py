"""Profile the daemon's dispatch hot path under the 8-client no-match load (SPEC §11).

    .venv/bin/python bench/profile_dispatch.py [--seconds 20] [--clients 8] [--out FILE]

Starts ``workspace backend`` as :mod:`bench_backend` does, attaches ``py-spy record`` (a tool,
installed separately: ``pip install py-spy``) to the daemon's pid while the clients dispatch,
and prints the functions that took the most samples (own time and with callees). ``--raw``
keeps py-spy's collapsed stacks for a flame graph.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import bench_backend  # a sibling: `python bench/profile_dispatch.py` puts bench/ on sys.path

PY_SPY = Path(sys.executable).with_name("py-spy")


def summarize(collapsed: Path, top: int) -> str:
    """Per thread: the ``top`` frames by own and by inclusive samples, with percentages.

    Samples parked in ``select`` (the loop waiting for I/O) are left out, and so are the frames
    every sample of a thread shares (``<module>``, ``run_forever`` …): they say nothing.
    """
    threads: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        head, _, rest = stack.partition(";")
        if not rest:
            continue
        frames = [_short(f) for f in rest.split(";")]
        if frames[-1].startswith(("EpollSelector.select", "select (")):
            continue
        threads[head.partition(": ")[2] or head].append((frames, int(count_text)))
    lines: list[str] = []
    for thread, samples in sorted(threads.items(), key=lambda kv: -sum(n for _, n in kv[1])):
        total = sum(n for _, n in samples)
        own: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        for frames, count in samples:
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
        shared = {f for f, n in inclusive.items() if n >= 0.99 * total}
        lines += [f"== thread {thread}: {total} busy samples", f"top {top} by own time:"]
        lines += [f"{100 * n / total:6.1f}%  {frame}" for frame, n in own.most_common(top)]
        lines += [f"top {top} by inclusive time (frame and its callees):"]
        ranked = [(f, n) for f, n in inclusive.most_common() if f not in shared][:top]
        lines += [f"{100 * n / total:6.1f}%  {frame}" for frame, n in ranked]
        lines.append("")
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)": lines vary per sample within a function.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    marker = "site-packages/"
    if marker in path:
        path = path.split(marker, 1)[1]
    elif "/src/" in path:
        path = path.split("/src/", 1)[1]
    else:
        path = Path(path).name
    return f"{name} ({path})"


async def load(url: str, clients: int, seconds: float) -> dict[str, float]:
    return await bench_backend.dispatch_throughput(url, clients, seconds, "profile")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, help="write the summary here too")
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    parser.add_argument("--idle", action="store_true", help="include idle frames (waiting)")
    args = parser.parse_args()
    if not PY_SPY.exists() and shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed: .venv/bin/python -m pip install py-spy")
    spy = str(PY_SPY) if PY_SPY.exists() else "py-spy"
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "ws"
        bench_backend.write_flows(root)
        proc, url = bench_backend.start_backend(root, Path(scratch) / "data")
        collapsed = args.raw or Path(scratch) / "collapsed.txt"
        try:
            # Warm up first so start-up and imports stay out of the profile.
            asyncio.run(load(url, args.clients, 1.0))
            command = [
                spy, "record", "--pid", str(proc.pid), "--format", "raw", "--rate",
                str(args.rate), "--duration", str(int(args.seconds)), "--output", str(collapsed),
                "--threads",
            ]  # fmt: skip
            if args.idle:
                command.append("--idle")
            recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            got = asyncio.run(load(url, args.clients, args.seconds - 1))
            recorder.wait()
        finally:
            proc.terminate()
            proc.wait(15)
        header = (
            f"dispatch, no match, {args.clients} clients under py-spy: "
            f"{got['per_second']:.0f}/s, p50 {got['p50_ms']:.2f} ms, p99 {got['p99_ms']:.2f} ms\n"
        )
        summary = header + summarize(collapsed, args.top)
    print(summary, end="")
    if args.out is not None:
        args.out.write_text(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
