"""``workspace tasks``: every task of workspace.toml with its last run and when it is next due.

Reads only: the config through its cache (never written here), the local state read-only (no
file is created, no run is recovered), and the tick's own planning, so "next due" is what the
next ``workspace tick`` would decide. ``--json`` prints one document::

    {"now": "2026-12-01T02:00:00.000Z", "timezone": "UTC", "state": ".../state.sqlite3",
     "tasks": [{"taskId": "harness", "kind": "command", "enabled": true,
                "description": null, "schedule": "0 * * * *", "catchup": "latest",
                "lastRun": {"id": "...", "status": "completed", "reason": null,
                            "startedAt": "...", "finishedAt": "...",
                            "eventId": null, "runIds": []},
                "due": false, "nextDue": "2026-12-01T03:00:00.000Z",
                "action": "idle", "reason": "no slot since the last one (...)"}]}

``lastRun`` is null for a task that never ran; a flow task's names its event and backend runs
from the moment the backend took the event (a run killed while following them keeps them).
``nextDue`` is null for a task without a schedule or a disabled one, and the first slot the
next tick runs when ``due`` is true. ``action`` is the tick's decision (``run overlap skip
baseline idle disabled``), null without a schedule.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import TYPE_CHECKING, Any

from workspace_adapter.base.times import iso, parse_iso, utc_now
from workspace_adapter.local import configfile, schedule
from workspace_adapter.local.state import StateStore

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals
    from workspace_adapter.local.config import TaskConfig
    from workspace_adapter.local.taskruns import TaskRun


def tasks(g: Globals, *, as_json: bool = False, now: dt.datetime | None = None) -> int:
    """List the tasks; exit 0 (2 when workspace.toml cannot be read)."""
    config = configfile.load_cached(g.workspace_root, write=False)
    store = StateStore.for_workspace(config.root, g.mode, readonly=True)
    moment = now or utc_now()
    last: dict[str, TaskRun] = {}
    states: dict[str, Any] = {}
    running: set[str] = set()
    if store.exists():
        for task in config.tasks:
            found = store.runs(task.id, 1)
            if found:
                last[task.id] = found[0]
        states = store.slot_states()
        running = store.running_tasks()
    plans = {d.task.id: d for d in schedule.plan_tick(config, states, running, moment)}
    rows = [_row(task, last.get(task.id), plans.get(task.id)) for task in config.tasks]
    if as_json:
        document = {
            "now": iso(moment),
            "timezone": config.timezone,
            "state": str(store.path),
            "tasks": rows,
        }
        sys.stdout.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n")
        return 0
    if not rows:
        print(f"no tasks in {config.display_path}")
        return 0
    _print_table(rows, schedule.zone_of(config))
    return 0


def _row(task: TaskConfig, last: TaskRun | None, plan: schedule.Decision | None) -> dict[str, Any]:
    next_due: str | None = None
    if plan is not None and plan.due and plan.slots:
        next_due = plan.slots[0]
    elif plan is not None and plan.action != "disabled" and plan.next_slot is not None:
        next_due = iso(plan.next_slot)
    return {
        "taskId": task.id,
        "kind": task.kind,
        "enabled": task.enabled,
        "description": task.description,
        "schedule": task.schedule,
        "catchup": task.catchup,
        "lastRun": None
        if last is None
        else {
            "id": last.id,
            "status": last.status,
            "reason": last.reason,
            "startedAt": last.started_at,
            "finishedAt": last.finished_at,
            "eventId": last.event_id,
            "runIds": last.run_ids,
        },
        "due": bool(plan is not None and plan.due),
        "nextDue": next_due,
        "action": plan.action if plan is not None else None,
        "reason": plan.reason if plan is not None else None,
    }


def _when(text: str, zone: dt.tzinfo) -> str:
    """A stored time as the tick's reasons show one: minutes, in the workspace's zone."""
    return schedule.local_time(parse_iso(text).astimezone(zone))


def _print_table(rows: list[dict[str, Any]], zone: dt.tzinfo) -> None:
    table = [("TASK", "KIND", "SCHEDULE", "LAST RUN", "NEXT DUE")]
    for row in rows:
        run = row["lastRun"]
        last = "never" if run is None else f"{run['status']} {_when(run['startedAt'], zone)}"
        if not row["enabled"]:
            due = "disabled"
        elif row["schedule"] is None:
            due = "not scheduled (workspace run)"
        elif row["due"]:
            due = f"due now (since {_when(row['nextDue'], zone)})"
        elif row["action"] == "baseline":
            due = f"{_when(row['nextDue'], zone)} (after the first tick)" if row["nextDue"] else "-"
        else:
            due = _when(row["nextDue"], zone) if row["nextDue"] else "never"
        table.append((row["taskId"], row["kind"], row["schedule"] or "-", last, due))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line[:4], widths, strict=True)]
        print("  ".join([*cells, line[4]]).rstrip())
