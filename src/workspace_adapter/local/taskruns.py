"""A local run record and a scheduled task's slot state, and how times are written.

Plain standard-library values with no store attached: ``state.StateStore`` keeps them,
``taskrun`` and ``schedule`` make them. They are not msgspec structs on purpose: ``workspace
run`` and ``tick`` load them on every start, and msgspec alone costs more to import than their
whole time budget (docs/decisions/0001-stdlib-only-cli-fast-path.md).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from workspace_adapter.base.status import Status
from workspace_adapter.base.times import iso
from workspace_adapter.base.values import Value

# The record's fields in the order of its JSON document and of the state's columns.
FIELDS = (
    "id",
    "task_id",
    "kind",
    "status",
    "reason",
    "started_at",
    "finished_at",
    "exit_code",
    "stdout_tail",
    "stderr_tail",
    "event_id",
    "run_ids",
    "slot",
)
_JSON_KEYS = tuple(
    name.split("_")[0] + "".join(part.title() for part in name.split("_")[1:]) for name in FIELDS
)


class TaskRun:
    """One local run of a task; its JSON keys are camelCase (``taskId``, ``startedAt``).

    Mutable: a run is created ``running`` and filled in as it ends.
    """

    __slots__ = FIELDS

    def __init__(
        self,
        *,
        id: str,
        task_id: str,
        kind: str,
        status: Status,
        started_at: str,
        reason: str | None = None,
        finished_at: str | None = None,
        exit_code: int | None = None,
        stdout_tail: str = "",
        stderr_tail: str = "",
        event_id: str | None = None,
        run_ids: list[str] | None = None,
        slot: str | None = None,
    ) -> None:
        self.id = id
        self.task_id = task_id
        self.kind = kind
        self.status = status
        self.reason = reason
        self.started_at = started_at
        self.finished_at = finished_at
        self.exit_code = exit_code
        self.stdout_tail = stdout_tail
        self.stderr_tail = stderr_tail
        self.event_id = event_id
        self.run_ids: list[str] = [] if run_ids is None else run_ids
        self.slot = slot

    def to_json(self) -> dict[str, Any]:
        """The record as ``workspace run --json`` prints it (camelCase keys, field order)."""
        return {key: getattr(self, name) for key, name in zip(_JSON_KEYS, FIELDS, strict=True)}

    @classmethod
    def from_values(cls, values: tuple[Any, ...]) -> TaskRun:
        """A record from its values in :data:`FIELDS` order (a state row, ``run_ids`` decoded)."""
        return cls(**dict(zip(FIELDS, values, strict=True)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskRun):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in FIELDS)
        return f"TaskRun({inner})"


class SlotState(Value):
    """A scheduled task's last slot and, cached, the first slot after it.

    ``next_slot`` is only valid for the ``schedule`` and ``timezone`` it was computed with; it
    lets a tick decide "not due" with a string comparison instead of evaluating cron.
    """

    __slots__ = ("last_slot", "next_slot", "schedule", "timezone")

    def __init__(
        self,
        last_slot: str,
        next_slot: str | None = None,
        schedule: str | None = None,
        timezone: str | None = None,
    ) -> None:
        self.last_slot = last_slot
        self.next_slot = next_slot
        self.schedule = schedule
        self.timezone = timezone


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
