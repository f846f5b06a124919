"""The one status vocabulary of the loop, ordered worst first, and what each record may hold.

A step's ``FLOW_RESULT``, a task run, a flow run and a maintenance attempt all speak these
values; each record keeps to its own subset (:data:`RESULT_STATUSES`, :data:`TASK_RUN_STATUSES`,
:data:`RUN_STATES`, :data:`ATTEMPT_STATUSES`). Values are plain strings on the wire and in
SQLite (a :class:`~enum.StrEnum` member *is* its string).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from workspace_adapter.base.errors import EXIT_FAILED, EXIT_NEEDS_PERSON, EXIT_OK


class Status(StrEnum):
    """Every status a run, a result or an attempt can have; outcomes first, worst first."""

    FAILED = "failed"
    CANCELED = "canceled"
    NEEDS_INTERVENTION = "needs_intervention"
    BLOCKED = "blocked"
    CHANGED = "changed"
    COMPLETED = "completed"
    SKIPPED = "skipped"
    # Not outcomes: where a record is before it has one.
    RUNNING = "running"
    QUEUED = "queued"
    STARTED = "started"
    UNDELIVERED = "undelivered"


# The outcomes in the order of the status rule: a run of several steps takes the worst.
OUTCOMES: tuple[Status, ...] = (
    Status.FAILED,
    Status.CANCELED,
    Status.NEEDS_INTERVENTION,
    Status.BLOCKED,
    Status.CHANGED,
    Status.COMPLETED,
    Status.SKIPPED,
)
_RANK: dict[str, int] = {status: index for index, status in enumerate(OUTCOMES)}
# What a step may report on its FLOW_RESULT line (canceling is the backend's, not the step's).
RESULT_STATUSES = frozenset(OUTCOMES) - {Status.CANCELED}
# A flow run's lifecycle in the backend, and the states it ends in.
RUN_STATES = frozenset(
    {Status.QUEUED, Status.RUNNING, Status.COMPLETED, Status.FAILED, Status.CANCELED}
)
TERMINAL_RUN_STATES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELED})
# A local task run: running, then an outcome.
TASK_RUN_STATUSES = frozenset(OUTCOMES) | {Status.RUNNING}
# A maintenance attempt: not yet received, received, then the worst outcome of its runs.
ATTEMPT_STATUSES: tuple[Status, ...] = (Status.UNDELIVERED, Status.STARTED, *OUTCOMES)
# Outcomes that need a person (exit code EXIT_NEEDS_PERSON).
NEEDS_PERSON = frozenset({Status.BLOCKED, Status.NEEDS_INTERVENTION})


def rank(status: str) -> int:
    """Position in :data:`OUTCOMES`; lower is worse, and anything else counts as the worst."""
    return _RANK.get(status, -1)


def worst(statuses: Iterable[str], default: Status = Status.SKIPPED) -> Status:
    """The worst of ``statuses`` (``default`` when there are none; an unknown one is failed)."""
    found = list(statuses)
    if not found:
        return default
    bad = min(found, key=rank)
    return Status(bad) if bad in _RANK else Status.FAILED


def exit_code(status: str) -> int:
    """The command's exit code for an outcome: 0 fine, 3 needs a person, 1 anything else."""
    if status in (Status.COMPLETED, Status.CHANGED, Status.SKIPPED):
        return EXIT_OK
    if status in NEEDS_PERSON:
        return EXIT_NEEDS_PERSON
    return EXIT_FAILED


def flow_status(state: str | None, result_status: str | None) -> Status:
    """A flow run's outcome: the step's result when it completed, else failed or canceled."""
    if state == Status.COMPLETED:
        return Status(result_status) if result_status in RESULT_STATUSES else Status.COMPLETED
    if state == Status.CANCELED:
        return Status.CANCELED
    return Status.FAILED
