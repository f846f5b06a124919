"""Flow events, flow results and the status order shared by every part of the loop."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec

from workspace_adapter.local.records import iso

FlowStatus = Literal["skipped", "completed", "changed", "needs_intervention", "blocked", "failed"]
TaskStatus = Literal[
    "skipped", "completed", "changed", "needs_intervention", "blocked", "canceled", "failed"
]

FLOW_STATUSES: tuple[str, ...] = (
    "skipped",
    "completed",
    "changed",
    "needs_intervention",
    "blocked",
    "failed",
)

# Worst first (SPEC §4).
STATUS_ORDER: tuple[str, ...] = (
    "failed",
    "canceled",
    "needs_intervention",
    "blocked",
    "changed",
    "completed",
    "skipped",
)


def status_rank(status: str) -> int:
    """Lower is worse; unknown statuses count as the worst."""
    try:
        return STATUS_ORDER.index(status)
    except ValueError:
        return -1


def worst_status(statuses: list[str], default: str = "skipped") -> str:
    """The worst status of ``statuses`` in the order of SPEC §4."""
    if not statuses:
        return default
    return min(statuses, key=status_rank)


def exit_code_for(status: str) -> int:
    """Exit code of SPEC §2 for a task or flow status."""
    if status in ("completed", "changed", "skipped"):
        return 0
    if status in ("blocked", "needs_intervention"):
        return 3
    return 1


class FlowEvent(msgspec.Struct, kw_only=True):
    """The FlowEvent envelope (SPEC §5); extra top-level keys survive in :func:`normalize_event`."""

    id: str
    type: str
    source: str | None = None
    occurredAt: str | None = None
    receivedAt: str | None = None
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


class FlowResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a step reports on its ``FLOW_RESULT`` line."""

    status: FlowStatus
    message: str | None = None
    artifacts: dict[str, Any] = msgspec.field(default_factory=dict)


class EventError(ValueError):
    """An event that does not fit the envelope; ``field`` names the offending key."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def utc_now_iso() -> str:
    """Current UTC time as ISO-8601 with milliseconds and a ``Z``."""
    return iso(dt.datetime.now(dt.UTC))


def normalize_event(raw: object) -> dict[str, Any]:
    """Validate a decoded event and return it as a dict, extras kept, ``receivedAt`` filled."""
    if not isinstance(raw, dict):
        raise EventError("event must be a JSON object", None)
    for key in ("id", "type"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise EventError(f"event.{key} is required and must be a non-empty string", key)
    try:
        msgspec.convert(raw, FlowEvent)
    except msgspec.ValidationError as exc:
        field = str(exc).rsplit("`$.", 1)[-1].rstrip("`") if "`$." in str(exc) else None
        raise EventError(f"invalid event: {exc}", field) from None
    event = dict(raw)
    if event.get("payload") is None:
        event["payload"] = {}
    if not event.get("receivedAt"):
        event["receivedAt"] = utc_now_iso()
    return event


def flow_status_of_run(run: dict[str, Any]) -> str:
    """A backend run's flow status (SPEC §4): its resultStatus when completed, else its status."""
    status = run.get("status")
    if status == "completed":
        result_status = run.get("resultStatus")
        return result_status if isinstance(result_status, str) else "completed"
    if status == "canceled":
        return "canceled"
    return "failed"
