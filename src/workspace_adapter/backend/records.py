"""What the backend store holds, as values: run records, dispatch outcomes, and their rows.

A :class:`FlowRun` is read back from a ``runs`` row selected as :data:`RUN_COLUMNS`; its
:meth:`FlowRun.to_wire` is the run as clients see it (docs/api.md).
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec

from workspace_adapter.base.status import TERMINAL_RUN_STATES, Status
from workspace_adapter.base.times import utc_now_iso
from workspace_adapter.protocol import DispatchStatus, WireRun

# The columns every run query selects, in the order :func:`run_from_row` reads them.
RUN_COLUMNS = (
    "id, event_id, flow_name, step_name, replay, status, result_status, result, error, "
    "exit_code, stdout_tail, stderr_tail, created_at, started_at, completed_at"
)

json_encoder = msgspec.json.Encoder()
json_decoder = msgspec.json.Decoder()


class FlowRun(msgspec.Struct, kw_only=True):
    """One run of one flow step for one event, as stored."""

    id: str
    event_id: str
    flow_name: str
    step_name: str
    status: str
    replay: bool = False
    result_status: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    exit_code: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    created_at: str = ""
    started_at: str | None = None
    completed_at: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATES

    def to_wire(self) -> WireRun:
        """The run as clients see it: our keys plus codex-flows' compatibility keys."""
        result_json = (
            None
            if self.result is None
            else json_encoder.encode(
                {"flow": self.flow_name, "step": self.step_name, "result": self.result}
            ).decode()
        )
        return WireRun(
            id=self.id,
            eventId=self.event_id,
            flowName=self.flow_name,
            stepName=self.step_name,
            status=self.status,
            resultStatus=self.result_status,
            result=self.result,
            error=self.error,
            exitCode=self.exit_code,
            replay=self.replay,
            stdoutTail=self.stdout_tail,
            stderrTail=self.stderr_tail,
            createdAt=self.created_at,
            startedAt=self.started_at,
            completedAt=self.completed_at,
            resultJson=result_json,
            stdout=self.stdout_tail,
            stderr=self.stderr_tail,
        )


class DispatchRecord(msgspec.Struct, frozen=True):
    """What a dispatch committed: ``accepted`` with new runs, or ``duplicate`` with the first."""

    status: DispatchStatus
    run_ids: list[str]
    runs: list[FlowRun]


def new_flow_run_id(replay: bool = False) -> str:
    """A new run id: ``run_`` and 12 hex digits, then ``_replay`` for a replay's run."""
    return f"run_{secrets.token_hex(6)}" + ("_replay" if replay else "")


def new_flow_run(event_id: str, flow_name: str, step_name: str, *, replay: bool = False) -> FlowRun:
    return FlowRun(
        id=new_flow_run_id(replay),
        event_id=event_id,
        flow_name=flow_name,
        step_name=step_name,
        status=Status.QUEUED,
        replay=replay,
        created_at=utc_now_iso(),
    )


def run_from_row(row: tuple[Any, ...]) -> FlowRun:
    """The record of a ``runs`` row selected as :data:`RUN_COLUMNS`."""
    return FlowRun(
        id=row[0],
        event_id=row[1],
        flow_name=row[2],
        step_name=row[3],
        replay=bool(row[4]),
        status=row[5],
        result_status=row[6],
        result=None if row[7] is None else json_decoder.decode(row[7]),
        error=row[8],
        exit_code=row[9],
        stdout_tail=row[10],
        stderr_tail=row[11],
        created_at=row[12],
        started_at=row[13],
        completed_at=row[14],
    )
