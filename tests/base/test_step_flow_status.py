"""A step's outcome and a backend run say a flow's status by the one rule of ``base/status``."""

from __future__ import annotations

import msgspec
import pytest

from workspace_adapter.base import status as status_rule
from workspace_adapter.base.errors import EXIT_FAILED, EXIT_NEEDS_PERSON, EXIT_OK
from workspace_adapter.base.status import Status
from workspace_adapter.cluster.runstream import decode_outcome
from workspace_adapter.flows.runner import StepOutcome


def outcome(status: Status, result_status: str | None) -> StepOutcome:
    return StepOutcome(
        status=status, result_status=result_status, started_at="t0", finished_at="t1"
    )


@pytest.mark.parametrize(
    ("status", "result_status", "expected"),
    [
        (Status.COMPLETED, "changed", Status.CHANGED),
        (Status.COMPLETED, "needs_intervention", Status.NEEDS_INTERVENTION),
        (Status.COMPLETED, None, Status.COMPLETED),
        (Status.FAILED, "changed", Status.FAILED),
        (Status.CANCELED, "completed", Status.CANCELED),
    ],
)
def test_the_steps_own_status_counts_only_when_the_run_completed(
    status: Status, result_status: str | None, expected: Status
) -> None:
    assert outcome(status, result_status).flow_status is expected


@pytest.mark.parametrize("result_status", ["canceled", "bogus", "running"])
def test_a_result_status_a_step_may_not_report_is_not_taken_as_is(result_status: str) -> None:
    # A local run cannot produce one (FLOW_RESULT is validated), but a cluster worker's end
    # entry is decoded as it was written: the same rule as the backend's runs applies to it.
    written = msgspec.json.encode(outcome(Status.COMPLETED, result_status))
    decoded = decode_outcome(written)
    assert decoded.result_status == result_status
    assert decoded.flow_status is Status.COMPLETED


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (Status.COMPLETED, EXIT_OK),
        (Status.CHANGED, EXIT_OK),
        (Status.SKIPPED, EXIT_OK),
        (Status.BLOCKED, EXIT_NEEDS_PERSON),
        (Status.NEEDS_INTERVENTION, EXIT_NEEDS_PERSON),
        (Status.FAILED, EXIT_FAILED),
        (Status.CANCELED, EXIT_FAILED),
        ("bogus", EXIT_FAILED),
    ],
)
def test_an_outcome_exits_with_the_code_errors_names(status: str, code: int) -> None:
    assert status_rule.exit_code(status) == code


def test_a_run_that_ended_before_its_step_ran_keeps_when_it_was_asked_to_start() -> None:
    ended = StepOutcome.ended(Status.FAILED, "cannot start the step", "2026-01-01T00:00:00Z")
    assert (ended.status, ended.error) == (Status.FAILED, "cannot start the step")
    assert ended.started_at == "2026-01-01T00:00:00Z"
    assert ended.finished_at > ended.started_at
    assert ended.flow_status is Status.FAILED and ended.result is None


def test_a_run_never_asked_to_start_starts_and_ends_at_once() -> None:
    ended = StepOutcome.ended(Status.CANCELED, "canceled")
    assert ended.started_at == ended.finished_at != ""
    assert ended.flow_status is Status.CANCELED
