"""``workspace tick``: run the scheduled tasks that are due and explain each decision.

:func:`workspace_adapter.local.tick.run_tick` plans and carries the tick out; this module prints
each decision (before its task's live output), each slot's outcome, and the JSON document.
Each slot is *claimed* in one transaction, so two ticks started together run a task once: the
loser finds the slot taken and says so. ``--dry-run`` opens the state read-only (or not at all)
and prints the plan.

``--json`` prints one document::

    {"now": "2026-11-24T12:12:00.000Z", "timezone": "UTC", "dryRun": false,
     "tasks": [{"taskId": "harness-flow", "schedule": "*/5 * * * *", "catchup": "latest",
                "action": "run", "due": true,
                "reason": "2 slot(s) since 2026-11-24 12:00 UTC; catchup latest: ...",
                "lastSlot": "2026-11-24T12:00:00.000Z", "slots": ["2026-11-24T12:10:00.000Z"],
                "nextSlot": "2026-11-24T12:15:00.000Z", "runs": [<run record, as `run --json`>]}]}

``action`` is run | overlap | skip | baseline | idle | disabled | taken (another tick claimed
the slot first); ``runs`` holds the records this tick stored (a run, or a ``skipped`` record
for overlap and ``catchup = "none"``). Exit code: 0 when nothing ran or everything that ran
succeeded or was skipped; else, in this order, 1 (a run failed or was canceled), 4 (the backend
was not reachable), 3 (a run needs a person).
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import TYPE_CHECKING

from workspace_adapter.local import configfile
from workspace_adapter.local.tick import SlotReport, TickListener, run_tick

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals
    from workspace_adapter.local import schedule, taskrun


def tick(
    g: Globals, *, dry_run: bool = False, as_json: bool = False, now: dt.datetime | None = None
) -> int:
    """Plan and (unless ``dry_run``) carry out one tick at ``now`` (default: the clock)."""
    config = configfile.load_cached(g.workspace_root, write=not dry_run)
    sinks: taskrun.Sinks | None = None  # None: the terminal
    if as_json:
        from workspace_adapter.local import taskrun

        sinks = taskrun.Sinks.for_json(as_json)
    report = run_tick(
        config,
        mode=g.mode,
        backend_url=g.backend_url,
        sinks=sinks,
        now=now,
        dry_run=dry_run,
        listener=_Printer(as_json),
    )
    if as_json:
        import json

        sys.stdout.write(json.dumps(report.to_json(), ensure_ascii=False, separators=(",", ":")))
        sys.stdout.write("\n")
    elif not report.tasks:
        print(
            "no task has a schedule; tick runs nothing (run unscheduled tasks with `workspace run`)"
        )
    return report.exit_code


class _Printer(TickListener):
    """Each decision on stdout as it is made, each slot's outcome after it (stderr under --json)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def decided(self, decision: schedule.Decision) -> None:
        if not self.as_json:
            print(line(decision))

    def slot_done(self, report: SlotReport) -> None:
        if report.outcome == "taken":
            self._say(f"  {report.task_id}: slot {report.slot} already claimed by another tick")
            return
        assert report.record is not None
        if report.outcome == "skipped":
            self._say(
                f"  {report.task_id}: skipped ({report.record.reason}), slot {report.slot} recorded"
            )
            return
        from workspace_adapter.commands.run import summary

        if report.message:
            print(f"  {report.message}", file=sys.stderr)
        self._say(f"  {summary(report.record)}")

    def _say(self, text: str) -> None:
        print(text, file=sys.stderr if self.as_json else sys.stdout)


def line(decision: schedule.Decision) -> str:
    """``task: due|not due: why; next slot <when, in the workspace's zone>``."""
    from workspace_adapter.local.schedule import local_time

    upcoming = local_time(decision.next_slot) if decision.next_slot else "none"
    state = "due" if decision.due else "not due"
    return f"{decision.task.id}: {state}: {decision.reason}; next slot {upcoming}"
