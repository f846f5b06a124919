"""Whole-process CLI timings against the interpreter's floor (SPEC §11).

The floor is ``python -c "import sqlite3, tomllib, subprocess"``: what any CLI that reads TOML,
keeps SQLite state and runs a subprocess pays before its own code. In one run this times, as
whole processes and alternating so load on the machine hits each alike:

* the floor;
* ``workspace run`` of a one-line command task (budget: floor + 15 ms);
* ``workspace tick`` over 5 unscheduled tasks (budget: floor + 10 ms);

each after one warm-up call that creates the state and the validated-config cache, and prints
the medians with each CLI figure next to the floor of the same run.

    .venv/bin/python bench/bench_cli.py [--reps N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = Path(sys.executable).with_name("workspace")
FLOOR = [sys.executable, "-c", "import sqlite3, tomllib, subprocess"]
RUN_OVER_FLOOR_MS = 15.0
TICK_OVER_FLOOR_MS = 10.0


def write_workspace(root: Path, tasks: int = 5) -> None:
    parts = ['[workspace]\nname = "bench"\n']
    for index in range(tasks):
        parts.append(
            f'[[workspace.tasks]]\nid = "task-{index}"\nkind = "command"\ncommand = ["true"]\n'
        )
    (root / "workspace.toml").write_text("\n".join(parts))
    # A file changed moments ago keeps its cache "racy" (its text is compared on each load):
    # date it back, as any workspace.toml not edited in the last seconds is.
    old = time.time() - 60
    os.utime(root / "workspace.toml", (old, old))


def _wall_ms(argv: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - began) * 1000


def measure(reps: int = 11) -> dict[str, list[float]]:
    """Samples in ms of ``floor``, ``run`` and ``tick``, ``reps`` each, alternating."""
    # An installed package has its bytecode compiled; an editable checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would recompile every edited module on every start.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "src")], check=True, env=os.environ
    )
    with tempfile.TemporaryDirectory(prefix="workspace-bench-cli-") as folder:
        root = Path(folder)
        write_workspace(root)
        base = [str(WORKSPACE), "--workspace-root", str(root)]
        commands = {"floor": FLOOR, "run": [*base, "run", "task-0"], "tick": [*base, "tick"]}
        for argv in commands.values():
            _wall_ms(argv)  # the state, the config cache, the page cache
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(reps):
            for name, argv in commands.items():
                samples[name].append(_wall_ms(argv))
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=11, help="runs of each (default 11)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    samples = measure(max(5, args.reps))
    floor = statistics.median(samples["floor"])
    rows = []
    for name, label, allowed in (
        ("run", "`workspace run` one-line task", RUN_OVER_FLOOR_MS),
        ("tick", "`workspace tick` 5 unscheduled tasks", TICK_OVER_FLOOR_MS),
    ):
        value = statistics.median(samples[name])
        rows.append(
            {
                "metric": label,
                "ms": round(value, 1),
                "floorMs": round(floor, 1),
                "overFloorMs": round(value - floor, 1),
                "budget": f"floor + {allowed:g} ms",
                "pass": value - floor <= allowed,
            }
        )
    if args.json:
        print(json.dumps({"floorMs": round(floor, 1), "rows": rows}, indent=2))
    else:
        print(f"floor (python + sqlite3, tomllib, subprocess): {floor:.1f} ms")
        for row in rows:
            mark = "yes" if row["pass"] else "NO"
            print(
                f"{row['metric']:<40} {row['ms']:>6.1f} ms  floor {row['floorMs']:.1f} ms "
                f"+{row['overFloorMs']:.1f}  budget {row['budget']}  {mark}"
            )
    return 0 if all(row["pass"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
