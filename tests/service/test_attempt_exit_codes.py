"""One exit-code rule for an attempt, whether `attempts retry` or `watch --once` ends on it."""

from __future__ import annotations

import pytest

from workspace_adapter.base.status import Status
from workspace_adapter.protocol import WireRun
from workspace_adapter.service.delivery import run_outcome
from workspace_adapter.service.schema import UNREACHABLE, Attempt, attempt_exit_code
from workspace_adapter.service.watcher import PassReport

T = "2026-11-24T12:00:00.000Z"


def attempt(status: Status, message: str | None = None) -> Attempt:
    return Attempt(
        id=f"att_{status}",
        event_id="e1",
        operation="dispatch",
        status=status,
        upstream_repo="o/r",
        upstream_tag="v1",
        message=message,
        created_at=T,
        updated_at=T,
    )


@pytest.mark.parametrize(
    ("status", "message", "code"),
    [
        (Status.UNDELIVERED, UNREACHABLE, 4),
        (Status.STARTED, None, 4),  # the backend went away while its runs were followed
        (Status.UNDELIVERED, "backend overloaded: busy", 1),  # it turned the event away
        (Status.FAILED, "exited with code 1", 1),
        (Status.NEEDS_INTERVENTION, None, 3),
        (Status.CHANGED, None, 0),
        (Status.SKIPPED, "no flow matched upstream.release", 0),
    ],
)
def test_an_attempt_exits_as_its_status_or_4_without_the_backend(
    status: Status, message: str | None, code: int
) -> None:
    assert attempt_exit_code(attempt(status, message)) == code
    assert PassReport(attempts=[attempt(status, message)]).exit_code() == code


def test_a_pass_exits_with_its_worst_attempt() -> None:
    changed, blocked = attempt(Status.CHANGED), attempt(Status.BLOCKED)
    overloaded = attempt(Status.UNDELIVERED, "backend overloaded: busy")
    assert PassReport().exit_code() == 0
    assert PassReport(attempts=[changed, blocked]).exit_code() == 3
    # Not delivered is not done: the pass no longer ends 0 on an attempt the backend refused.
    assert PassReport(attempts=[changed, blocked, overloaded]).exit_code() == 1
    assert PassReport(attempts=[changed], source_failures=1).exit_code() == 1
    down = attempt(Status.UNDELIVERED, UNREACHABLE)
    assert PassReport(attempts=[overloaded, down, blocked], source_failures=1).exit_code() == 4


def test_an_attempt_keeps_the_steps_words_and_a_task_run_the_backends_reason() -> None:
    # A step that reported its result, then exited non-zero.
    run = WireRun(
        id="run_1",
        status=Status.FAILED,
        result={"status": Status.NEEDS_INTERVENTION, "message": "conflicts in index.js"},
        error="exited with code 1",
    )
    assert run.message == "exited with code 1"
    assert run.step_message == "conflicts in index.js"
    assert run_outcome([run]).message == "conflicts in index.js"
    quiet = WireRun(id="run_2", status=Status.FAILED, error="timed out after 1.0s")
    assert quiet.message == quiet.step_message == "timed out after 1.0s"
    assert WireRun(id="run_3", status=Status.COMPLETED).step_message is None
