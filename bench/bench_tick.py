"""tick over 1,000 scheduled tasks with none due, in-process (SPEC §11 budget: 150 ms).

Builds a workspace with 1,000 command tasks on varied schedules, records every baseline with
one tick, then times further ticks at a moment when no slot has passed. Reports two numbers:
``tick`` (the whole command: load workspace.toml through the validated-config cache, open the
state, plan, print)
and ``plan`` (state read + :func:`plan_tick` on a loaded config).

    .venv/bin/python bench/bench_tick.py [--json]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from workspace_adapter.base.globals import Globals
from workspace_adapter.commands.tick import tick
from workspace_adapter.local import configfile, schedule
from workspace_adapter.local.state import StateStore

TASKS = 1000
BUDGET_MS = 150.0


def _schedule(i: int) -> str:
    # Hourly-or-rarer schedules, so a tick one minute after the baseline has nothing due.
    return [f"{i % 60} * * * *", f"{i % 60} {i % 24} * * *", f"{i % 60} {i % 24} * * MON-FRI"][
        i % 3
    ]


def build(root: Path, tasks: int = TASKS) -> None:
    parts = ['[workspace]\nname = "bench"\n']
    for i in range(tasks):
        parts.append(
            f'[[workspace.tasks]]\nid = "task-{i}"\nkind = "command"\ncommand = ["true"]\n'
            f'schedule = "{_schedule(i)}"\n'
        )
    (root / "workspace.toml").write_text("\n".join(parts))


def measure(repeat: int = 15, tasks: int = TASKS) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        build(root, tasks)
        g = Globals(root, "ws://127.0.0.1:9", "local", "warning")
        start = dt.datetime(2026, 11, 24, 12, 0, 30, tzinfo=dt.UTC)
        with contextlib.redirect_stdout(io.StringIO()):
            began = time.perf_counter()
            tick(g, now=start)  # baselines
            baseline_ms = (time.perf_counter() - began) * 1000
        now = start + dt.timedelta(seconds=20)  # before any task's next slot
        whole: list[float] = []
        for _ in range(repeat):
            with contextlib.redirect_stdout(io.StringIO()) as out:
                began = time.perf_counter()
                tick(g, now=now)
                whole.append((time.perf_counter() - began) * 1000)
            assert "due: " not in out.getvalue().replace("not due: ", "")
        loaded = configfile.load(root)
        store = StateStore.for_workspace(root, "local")
        plans: list[float] = []
        for _ in range(repeat):
            began = time.perf_counter()
            decisions = schedule.plan_tick(loaded, store.slot_states(), store.running_tasks(), now)
            plans.append((time.perf_counter() - began) * 1000)
            assert not any(d.due for d in decisions) and len(decisions) == tasks
        loads: list[float] = []
        for _ in range(repeat):
            began = time.perf_counter()
            configfile.load(root)
            loads.append((time.perf_counter() - began) * 1000)
        load_ms = statistics.median(loads)
        cached: list[float] = []
        for _ in range(repeat):
            began = time.perf_counter()
            configfile.load_cached(root)
            cached.append((time.perf_counter() - began) * 1000)
    return {
        "tick_ms": statistics.median(whole),
        "plan_ms": statistics.median(plans),
        "config_load_ms": load_ms,
        "config_cached_ms": statistics.median(cached),
        "baseline_ms": baseline_ms,
    }


def main() -> int:
    result = measure()
    ok = result["tick_ms"] < BUDGET_MS
    if "--json" in sys.argv:
        print(json.dumps({**result, "budget_ms": BUDGET_MS, "pass": ok}))
    else:
        print(f"{'metric':<44} {'value':>10} {'budget':>10}  pass")
        print(
            f"{'tick, 1000 scheduled tasks, none due':<44} {result['tick_ms']:>8.1f}ms"
            f" {BUDGET_MS:>8.0f}ms  {'yes' if ok else 'NO'}"
        )
        print(f"{'  of which plan (state + plan_tick)':<44} {result['plan_ms']:>8.1f}ms")
        print(
            f"{'  of which workspace.toml load (cache)':<44} {result['config_cached_ms']:>8.1f}ms"
        )
        print(
            f"{'  workspace.toml full check, after an edit':<44} {result['config_load_ms']:>8.1f}ms"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
