"""``workspace tick``: run the scheduled tasks that are due and explain each decision (SPEC §4).

Planning is :func:`workspace_adapter.local.schedule.plan_tick` (no I/O); this module carries the
plan out. Each slot is *claimed* in one ``BEGIN IMMEDIATE`` transaction that moves the task's
last slot only if it is still what the plan saw, so two ticks started together run a task once:
the loser finds the slot taken and says so. ``--dry-run`` opens the state read-only (or not at
all) and prints the plan.

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
from typing import TYPE_CHECKING, Any

import msgspec

from workspace_adapter.base.status import Status
from workspace_adapter.base.times import iso
from workspace_adapter.commands.run import summary
from workspace_adapter.local import config as config_mod
from workspace_adapter.local import configfile, schedule, taskrun
from workspace_adapter.local.state import StateStore
from workspace_adapter.local.taskruns import SlotState, TaskRun, new_task_run

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals

_EXIT_PRIORITY = (1, 4, 3, 2)


def tick(
    g: Globals, *, dry_run: bool = False, as_json: bool = False, now: dt.datetime | None = None
) -> int:
    """Plan and (unless ``dry_run``) carry out one tick at ``now`` (default: the clock)."""
    now = now or dt.datetime.now(dt.UTC)
    config = configfile.load(g.workspace_root)
    store = StateStore.for_workspace(config.root, g.mode, readonly=dry_run)
    has_schedules = any(task.schedule for task in config.tasks)
    if has_schedules and not dry_run:
        store.open()  # creates the state, and fails runs left by dead processes
    if has_schedules and store.exists():
        states, running = store.slot_states(), store.running_tasks()
    else:
        states, running = {}, set()
    decisions = schedule.plan_tick(config, states, running, now)
    sinks = taskrun.Sinks.for_json(as_json)
    reports: list[dict[str, Any]] = []
    codes: list[int] = []
    if not dry_run:
        store.cache_next_slots(
            [(d.task.id, d.slot_state) for d in decisions if d.action == "idle" and d.slot_state]
        )
    recorded: set[str] = set()
    if not dry_run:
        # Every first sight in one transaction: a first tick over 10,000 tasks commits once.
        recorded = store.record_baselines(
            [
                (d.task.id, d.slot_state)
                for d in decisions
                if d.action == "baseline" and d.slot_state
            ]
        )
    for decision in decisions:
        runs: list[TaskRun] = []
        action: str = decision.action
        if not as_json:
            print(_line(decision))
        if not dry_run and action == "baseline":
            action = "baseline" if decision.task.id in recorded else "taken"
        elif not dry_run:
            action = _carry_out(store, config, g, decision, sinks, runs, codes, as_json)
        reports.append(_report(decision, action, runs))
    if as_json:
        document = {
            "now": iso(now),
            "timezone": config.timezone,
            "dryRun": dry_run,
            "tasks": reports,
        }
        sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
    elif not decisions:
        print(
            "no task has a schedule; tick runs nothing (run unscheduled tasks with `workspace run`)"
        )
    return next((c for c in _EXIT_PRIORITY if c in codes), 0)


def _carry_out(
    store: StateStore,
    config: config_mod.WorkspaceConfig,
    g: Globals,
    decision: schedule.Decision,
    sinks: taskrun.Sinks,
    runs: list[TaskRun],
    codes: list[int],
    as_json: bool,
) -> str:
    """Claim and run the decision's slots; returns the action that actually happened."""
    task = decision.task
    if not decision.due:
        return decision.action
    assert decision.slot_state is not None
    expected = decision.last_slot
    for index, slot in enumerate(decision.slots):
        later = decision.slots[index + 1] if index + 1 < len(decision.slots) else None
        # A claim that is not the last leaves the next pending slot as next_slot, so a crash
        # in the middle of `catchup = "all"` resumes there.
        state = SlotState(
            last_slot=slot,
            next_slot=later or decision.slot_state.next_slot,
            schedule=decision.slot_state.schedule,
            timezone=decision.slot_state.timezone,
        )
        record = new_task_run(task.id, task.kind, dt.datetime.now(dt.UTC), slot=slot)
        if decision.action == "skip":
            record.status, record.reason = Status.SKIPPED, "catchup none"
            record.finished_at = record.started_at
        outcome = store.claim(record, expected, state)
        expected = slot
        if outcome == "taken":
            _say(f"  {task.id}: slot {slot} already claimed by another tick", as_json)
            return "taken"
        runs.append(record)
        if outcome == "overlap" or record.status == Status.SKIPPED:
            _say(f"  {task.id}: skipped ({record.reason}), slot {slot} recorded", as_json)
            continue
        execution = taskrun.execute(
            store, config, task, record, mode=g.mode, backend_url=g.backend_url, sinks=sinks
        )
        codes.append(execution.exit_code)
        if execution.message:
            print(f"  {execution.message}", file=sys.stderr)
        _say(f"  {summary(record)}", as_json)
    return decision.action


def _say(text: str, as_json: bool) -> None:
    print(text, file=sys.stderr if as_json else sys.stdout)


def _line(decision: schedule.Decision) -> str:
    upcoming = decision.next_slot.strftime("%Y-%m-%d %H:%M %Z") if decision.next_slot else "none"
    state = "due" if decision.due else "not due"
    return f"{decision.task.id}: {state}: {decision.reason}; next slot {upcoming}"


def _report(decision: schedule.Decision, action: str, runs: list[TaskRun]) -> dict[str, Any]:
    task = decision.task
    return {
        "taskId": task.id,
        "schedule": task.schedule,
        "catchup": task.catchup,
        "action": action,
        "due": decision.due,
        "reason": decision.reason,
        "lastSlot": decision.last_slot,
        "slots": decision.slots,
        "nextSlot": iso(decision.next_slot) if decision.next_slot else None,
        "runs": [msgspec.to_builtins(r) for r in runs],
    }
