"""A local run record and a scheduled task's slot state (SPEC §4), and how times are written.

Plain values with no store attached: ``state.StateStore`` keeps them, ``taskrun`` and
``schedule`` make them.
"""

from __future__ import annotations

import datetime as dt
import os

import msgspec

from workspace_adapter.base.status import Status
from workspace_adapter.base.times import iso


class TaskRun(msgspec.Struct, kw_only=True, rename="camel"):
    """One local run of a task (SPEC §4); JSON keys are camelCase (``taskId``, ``startedAt``)."""

    id: str
    task_id: str
    kind: str
    status: Status
    reason: str | None = None
    started_at: str
    finished_at: str | None = None
    exit_code: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    event_id: str | None = None
    run_ids: list[str] = msgspec.field(default_factory=list)
    slot: str | None = None


class SlotState(msgspec.Struct, kw_only=True):
    """A scheduled task's last slot and, cached, the first slot after it.

    ``next_slot`` is only valid for the ``schedule`` and ``timezone`` it was computed with; it
    lets a tick decide "not due" with a string comparison instead of evaluating cron.
    """

    last_slot: str
    next_slot: str | None = None
    schedule: str | None = None
    timezone: str | None = None


def new_task_run_id(task_id: str, started: dt.datetime) -> str:
    """``<time>-<random>-<task id>``: sorts by time, unique, says which task it ran."""
    stamp = iso(started).replace(":", "-").replace(".", "-")
    return f"{stamp}-{os.urandom(4).hex()}-{task_id}"


def new_task_run(task_id: str, kind: str, started: dt.datetime, slot: str | None = None) -> TaskRun:
    return TaskRun(
        id=new_task_run_id(task_id, started),
        task_id=task_id,
        kind=kind,
        status=Status.RUNNING,
        started_at=iso(started),
        slot=slot,
    )
