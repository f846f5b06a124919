"""Flow events and flow results: what a release event carries and what a step reports."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from workspace_adapter.base.status import RESULT_STATUSES, Status
from workspace_adapter.base.times import utc_now_iso

# C0 controls and DEL: never in an id or a type, which end up on terminals, in logs and in env.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_FRAME_BYTES = 1024 * 1024
"""The largest WebSocket frame or HTTP body the backend takes (protocol.py's limit too): kept
here so a step, which only prints a result, never loads the protocol."""
MAX_EVENT_BYTES = MAX_FRAME_BYTES - 1024
"""The largest event a client sends: the backend's frame limit less room for the JSON-RPC
request around it (``{"jsonrpc":"2.0","id":…,"method":"flow.dispatch","params":{"event":…}}``)."""


class FlowEvent(msgspec.Struct, kw_only=True):
    """The FlowEvent envelope; extra top-level keys survive in :func:`normalize_event`."""

    id: str
    type: str
    source: str | None = None
    occurredAt: str | None = None
    receivedAt: str | None = None
    payload: dict[str, Any] = msgspec.field(default_factory=dict)


RESULT_LINE_PREFIX = "FLOW_RESULT "
"""How a step's result line starts on its stdout; the FlowResult follows as JSON."""


def is_result_line(line: str) -> bool:
    """True for a step's ``FLOW_RESULT`` line, which the CLI shows as a summary instead."""
    return line.startswith(RESULT_LINE_PREFIX)


class FlowResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a step reports on its ``FLOW_RESULT`` line."""

    status: Status
    message: str | None = None
    artifacts: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in RESULT_STATUSES:
            raise ValueError(
                f"status must be one of {', '.join(sorted(RESULT_STATUSES))}, not {self.status!r}"
            )

    def line(self) -> str:
        """The step's last stdout line that reports this result."""
        return RESULT_LINE_PREFIX + msgspec.json.encode(self).decode()


class EventError(ValueError):
    """An event that does not fit the envelope; ``field`` names the offending key."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def normalize_event(raw: object) -> dict[str, Any]:
    """Validate a decoded event and return it as a dict, extras kept, ``receivedAt`` filled."""
    event = dict(check_event(raw))
    if event.get("payload") is None:
        event["payload"] = {}
    if not event.get("receivedAt"):
        event["receivedAt"] = utc_now_iso()
    return event


def check_event(raw: object) -> dict[str, Any]:
    """``raw`` when it fits the envelope; :class:`EventError` naming the field otherwise.

    Beyond the types: ``id`` and ``type`` hold no control character (they are printed, logged
    and passed to steps in their environment), and ``source`` and no string of ``payload``
    holds a NUL (a step may pass them on as arguments, where NUL cannot go).
    """
    if not isinstance(raw, dict):
        raise EventError("event must be a JSON object", None)
    for key in ("id", "type"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise EventError(f"event.{key} is required and must be a non-empty string", key)
        if found := _CONTROL.search(value):
            raise EventError(
                f"event.{key} must not contain control characters "
                f"(found {found.group()!r} at index {found.start()})",
                key,
            )
    try:
        msgspec.convert(raw, FlowEvent)
    except msgspec.ValidationError as exc:
        field = str(exc).rsplit("`$.", 1)[-1].rstrip("`") if "`$." in str(exc) else None
        raise EventError(f"invalid event: {exc}", field) from None
    source = raw.get("source")
    if isinstance(source, str) and "\x00" in source:
        raise EventError("event.source must not contain a NUL character", "source")
    if (nul := _nul_in(raw.get("payload"))) is not None:
        field, what = "payload" + nul[0], nul[1]
        raise EventError(f"event.{field} must not contain {what}", field)
    return raw


def check_sendable(raw: object) -> dict[str, Any]:
    """:func:`check_event`, and that the event fits the backend's frame: checked before a
    client connects, so an event too big is the operator's to shrink, never a lost link."""
    event = check_event(raw)
    size = len(msgspec.json.encode(event))
    if size > MAX_EVENT_BYTES:
        raise EventError(
            f"event is {size:,} bytes as JSON; the backend takes at most {MAX_EVENT_BYTES:,} "
            f"(its {MAX_FRAME_BYTES // 1024 // 1024} MiB frame limit, less the request around "
            "the event); make the payload smaller",
            None,
        )
    return event


def _nul_in(payload: object) -> tuple[str, str] | None:
    """Where in ``payload`` a string or a key holds a NUL (``.key[0].key``), and which of the
    two it is; None if nowhere. A loop, not recursion: a payload may nest as deep as its JSON
    parser allowed.
    """
    if b"\\u0000" not in msgspec.json.encode(payload):
        return None  # the common case, found at C speed: the walk below is for naming the field
    pending: list[tuple[object, str]] = [(payload, "")]
    while pending:
        value, where = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return where, "a NUL character"
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    return where, "a key with a NUL character"
                pending.append((item, f"{where}.{key}"))
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
    return None


# The keys of a stored event record, in codex-flows' order; extras live only in ``raw``.
_RECORD_KEYS = ("id", "type", "source", "occurredAt", "receivedAt", "payload", "raw", "createdAt")


def event_record(event: dict[str, Any], created_at: str) -> dict[str, Any]:
    """The record a backend stores and shows for a normalized ``event``, as codex-flows does.

    ``{id, type, source?, occurredAt?, receivedAt, payload, raw, createdAt}``: ``raw`` is the
    event as received (every original key, ``receivedAt`` filled in), ``createdAt`` when the
    backend stored it; ``source`` and ``occurredAt`` only when they are strings.
    """
    record: dict[str, Any] = {"id": event["id"], "type": event["type"]}
    for key in ("source", "occurredAt"):
        if isinstance(event.get(key), str):
            record[key] = event[key]
    record["receivedAt"] = event["receivedAt"]
    payload = event.get("payload")
    record["payload"] = payload if isinstance(payload, dict) else {}
    record["raw"] = event
    record["createdAt"] = created_at
    return record


def is_event_record(body: dict[str, Any]) -> bool:
    return (
        isinstance(body.get("raw"), dict)
        and isinstance(body.get("createdAt"), str)
        and set(body) <= set(_RECORD_KEYS)
    )


def as_event_record(body: dict[str, Any]) -> dict[str, Any]:
    """A stored body as a record; a body stored as the bare event (older stores) is wrapped,
    its ``receivedAt`` standing in for ``createdAt``."""
    if is_event_record(body):
        return body
    return event_record(body, str(body.get("receivedAt") or ""))


def event_of(body: dict[str, Any]) -> dict[str, Any]:
    """The event a stored body holds: a record's ``raw``, or the bare event itself."""
    raw = body.get("raw")
    return raw if is_event_record(body) and isinstance(raw, dict) else body
