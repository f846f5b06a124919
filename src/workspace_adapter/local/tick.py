"""One tick, carried out: plan the scheduled tasks, claim their slots, run them.

The core of ``workspace tick`` and of ``serve``'s scheduler loop. It prints nothing: it returns
a :class:`TickReport` (one :class:`TaskReport` per scheduled task, one :class:`SlotReport` per
slot it claimed) and tells an optional :class:`TickListener` as it goes, so the CLI can print
each decision before its task's live output and the daemon can log them instead. Where a flow
task's event goes is the caller's :class:`~workspace_adapter.local.taskrun.FlowDispatcher`.

Planning is :func:`workspace_adapter.local.schedule.plan_tick` (no I/O). Each slot is *claimed*
in one ``BEGIN IMMEDIATE`` transaction that moves the task's last slot only if it is still what
the plan saw, so two ticks started together run a task once: the loser finds the slot taken
(action ``taken``). A dry run opens the state read-only (or not at all) and runs nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal

from workspace_adapter.base.times import iso, utc_now
from workspace_adapter.base.values import Value

if TYPE_CHECKING:
    from workspace_adapter.local import schedule, taskrun
    from workspace_adapter.local.config import WorkspaceConfig
    from workspace_adapter.local.state import StateStore
    from workspace_adapter.local.taskruns import TaskRun

# The tick's exit code: the first of these any run had, else 0.
_EXIT_PRIORITY = (1, 4, 3, 2)

SlotOutcome = Literal["ran", "skipped", "taken"]


class SlotReport(Value):
    """One slot a tick claimed (or found taken) and what became of it.

    ``ran``: the task ran (``record`` holds how it ended, ``exit_code`` its code, ``message``
    the line to show when it did not simply succeed). ``skipped``: recorded as ``skipped``
    (``catchup = "none"``, or ``overlap``). ``taken``: another tick claimed it first.
    """

    __slots__ = ("exit_code", "message", "outcome", "record", "slot", "task_id")

    def __init__(
        self,
        task_id: str,
        slot: str,
        outcome: SlotOutcome,
        record: TaskRun | None = None,
        exit_code: int = 0,
        message: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.slot = slot
        self.outcome = outcome
        self.record = record
        self.exit_code = exit_code
        self.message = message


class TaskReport(Value):
    """One scheduled task's decision and what the tick did about it.

    ``action`` is the decision's, or ``taken`` when another tick got there first.
    """

    __slots__ = ("action", "decision", "slots")

    def __init__(self, decision: schedule.Decision, action: str, slots: list[SlotReport]) -> None:
        self.decision = decision
        self.action = action
        self.slots = slots

    @property
    def task_id(self) -> str:
        return self.decision.task.id

    @property
    def runs(self) -> list[TaskRun]:
        """The records this tick stored for the task (runs, and ``skipped`` records)."""
        return [s.record for s in self.slots if s.record is not None]

    def to_json(self) -> dict[str, Any]:
        decision, task = self.decision, self.decision.task
        return {
            "taskId": task.id,
            "schedule": task.schedule,
            "catchup": task.catchup,
            "action": self.action,
            "due": decision.due,
            "reason": decision.reason,
            "lastSlot": decision.last_slot,
            "slots": list(decision.slots),
            "nextSlot": iso(decision.next_slot) if decision.next_slot else None,
            "runs": [r.to_json() for r in self.runs],
        }


class TickReport(Value):
    """Everything one tick decided and did."""

    __slots__ = ("dry_run", "now", "tasks", "timezone")

    def __init__(
        self, now: dt.datetime, timezone: str, dry_run: bool, tasks: list[TaskReport]
    ) -> None:
        self.now = now
        self.timezone = timezone
        self.dry_run = dry_run
        self.tasks = tasks

    @property
    def exit_code(self) -> int:
        """0 when nothing ran or all went well; else 1 (failed), 4 (no backend), 3 (a person)."""
        codes = {s.exit_code for t in self.tasks for s in t.slots if s.outcome == "ran"}
        return next((c for c in _EXIT_PRIORITY if c in codes), 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "now": iso(self.now),
            "timezone": self.timezone,
            "dryRun": self.dry_run,
            "tasks": [t.to_json() for t in self.tasks],
        }


class TickListener:
    """Told as a tick goes; the defaults do nothing."""

    def decided(self, decision: schedule.Decision) -> None:
        """Before the decision is carried out (and before its task's live output)."""

    def slot_done(self, report: SlotReport) -> None:
        """After each slot was claimed and, when due, its run ended."""


def run_tick(
    config: WorkspaceConfig,
    *,
    mode: str,
    backend_url: str,
    sinks: taskrun.Sinks | None = None,
    dispatcher: taskrun.FlowDispatcher | None = None,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    listener: TickListener | None = None,
) -> TickReport:
    """Plan and (unless ``dry_run``) carry out one tick at ``now`` (default: the clock).

    Command tasks stream their output to ``sinks`` (default: this process's stdout and
    stderr); flow tasks go to ``dispatcher`` (default: the backend at ``backend_url``, over the
    wire). A workspace with no schedule is answered without opening (or importing) the state.
    """
    now = now or utc_now()
    if not any(task.schedule for task in config.tasks):
        return TickReport(now, config.timezone, dry_run, [])
    from workspace_adapter.local import schedule
    from workspace_adapter.local.state import StateStore

    listener = listener or TickListener()
    store = StateStore.for_workspace(config.root, mode, readonly=dry_run)
    try:
        if not dry_run:
            store.open()  # creates the state, and fails runs left by dead processes
        if store.exists():
            states, running = store.slot_states(), store.running_tasks()
        else:
            states, running = {}, set()
        decisions = schedule.plan_tick(config, states, running, now)
        recorded: set[str] = set()
        if not dry_run and decisions:
            store.cache_next_slots(
                [
                    (d.task.id, d.slot_state)
                    for d in decisions
                    if d.action == "idle" and d.slot_state
                ]
            )
            # Every first sight in one transaction: a first tick over 10,000 tasks commits once.
            recorded = store.record_baselines(
                [
                    (d.task.id, d.slot_state)
                    for d in decisions
                    if d.action == "baseline" and d.slot_state
                ]
            )
        carrier = _Carrier(store, config, mode, backend_url, sinks, dispatcher, listener)
        reports: list[TaskReport] = []
        for decision in decisions:
            listener.decided(decision)
            if dry_run or not decision.due:
                action: str = decision.action
                if not dry_run and action == "baseline" and decision.task.id not in recorded:
                    action = "taken"
                reports.append(TaskReport(decision, action, []))
            else:
                reports.append(carrier.carry_out(decision))
        return TickReport(now, config.timezone, dry_run, reports)
    finally:
        store.close()


class _Carrier:
    """Claims and runs the slots of due decisions."""

    def __init__(
        self,
        store: StateStore,
        config: WorkspaceConfig,
        mode: str,
        backend_url: str,
        sinks: taskrun.Sinks | None,
        dispatcher: taskrun.FlowDispatcher | None,
        listener: TickListener,
    ) -> None:
        self.store = store
        self.config = config
        self.mode = mode
        self.backend_url = backend_url
        self.sinks = sinks
        self.dispatcher = dispatcher
        self.listener = listener

    def carry_out(self, decision: schedule.Decision) -> TaskReport:
        from workspace_adapter.base.status import Status
        from workspace_adapter.local import taskrun
        from workspace_adapter.local.taskruns import SlotState, new_task_run

        task = decision.task
        assert decision.slot_state is not None
        expected = decision.last_slot
        done: list[SlotReport] = []
        for index, slot in enumerate(decision.slots):
            later = decision.slots[index + 1] if index + 1 < len(decision.slots) else None
            # A claim that is not the last leaves the next pending slot as next_slot, so a
            # crash in the middle of `catchup = "all"` resumes there.
            state = SlotState(
                last_slot=slot,
                next_slot=later or decision.slot_state.next_slot,
                schedule=decision.slot_state.schedule,
                timezone=decision.slot_state.timezone,
            )
            record = new_task_run(task.id, task.kind, utc_now(), slot=slot)
            if decision.action == "skip":
                record.status, record.reason = Status.SKIPPED, "catchup none"
                record.finished_at = record.started_at
            outcome = self.store.claim(record, expected, state)
            expected = slot
            if outcome == "taken":
                report = SlotReport(task.id, slot, "taken")
                done.append(report)
                self.listener.slot_done(report)
                return TaskReport(decision, "taken", done)
            if outcome == "overlap" or record.status == Status.SKIPPED:
                report = SlotReport(task.id, slot, "skipped", record)
            else:
                execution = taskrun.execute(
                    self.store,
                    self.config,
                    task,
                    record,
                    mode=self.mode,
                    backend_url=self.backend_url,
                    sinks=self.sinks or taskrun.Sinks.for_json(False),
                    dispatcher=self.dispatcher,
                )
                report = SlotReport(
                    task.id, slot, "ran", record, execution.exit_code, execution.message
                )
            done.append(report)
            self.listener.slot_done(report)
        return TaskReport(decision, decision.action, done)
