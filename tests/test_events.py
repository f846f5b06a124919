"""Event envelope validation and the status order."""

from __future__ import annotations

import pytest

from workspace_adapter.base import status as status_rule
from workspace_adapter.events import EventError, normalize_event


def test_normalize_keeps_extras_and_fills_received_at() -> None:
    event = normalize_event({"id": "e1", "type": "t", "extra": 1})
    assert event["extra"] == 1
    assert event["payload"] == {}
    assert event["receivedAt"].endswith("Z")


@pytest.mark.parametrize(
    ("raw", "field"),
    [({"type": "t"}, "id"), ({"id": "e"}, "type"), ({"id": "", "type": "t"}, "id")],
)
def test_missing_id_or_type_names_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(EventError) as exc:
        normalize_event(raw)
    assert exc.value.field == field
    assert f"event.{field}" in str(exc.value)


def test_payload_must_be_an_object() -> None:
    with pytest.raises(EventError):
        normalize_event({"id": "e", "type": "t", "payload": [1]})


def test_worst_status_follows_the_spec_order() -> None:
    assert status_rule.worst(["completed", "changed", "skipped"]) == "changed"
    assert status_rule.worst(["blocked", "needs_intervention"]) == "needs_intervention"
    assert status_rule.worst(["canceled", "failed"]) == "failed"
    assert status_rule.worst([]) == "skipped"


def test_exit_codes() -> None:
    assert [status_rule.exit_code(s) for s in ("completed", "changed", "skipped")] == [0, 0, 0]
    assert [status_rule.exit_code(s) for s in ("failed", "canceled")] == [1, 1]
    assert [status_rule.exit_code(s) for s in ("blocked", "needs_intervention")] == [3, 3]
