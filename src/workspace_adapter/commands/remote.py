"""``dispatch``, ``replay``, ``events``, ``flow-runs``, ``cancel``: talk to a running backend.

``--json`` is one object: ``events`` ``{"events": [...]}``, ``flow-runs`` ``{"runs": [...]}``
(each run as ``flow.getRun`` sends it), ``cancel`` the run, ``dispatch``/``replay``
``{status, eventId, matched, runIds, runs, flowStatus}``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from workspace_adapter.base import status as status_rule
from workspace_adapter.base.display import cell, line
from workspace_adapter.base.errors import UserError

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals
    from workspace_adapter.following import DispatchOutcome

T = TypeVar("T")


def run_remote(make: Callable[[], Awaitable[T]]) -> T:
    """Run a client coroutine; a refusal of the backend becomes a one-line error."""
    import anyio

    from workspace_adapter.client import RpcError

    async def main() -> T:
        return await make()

    try:
        return anyio.run(main)
    except RpcError as exc:
        # A -32602 is the operator's input; everything else the backend refused is a failure.
        raise UserError(exc.message, 2 if exc.code == -32602 else 1) from None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _read_event(file: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        event = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{file}: not valid JSON: {exc}") from None
    if not isinstance(event, dict):
        raise UserError(f"{file}: an event must be a JSON object")
    return event


def _on_output(as_json: bool) -> Callable[[str, str, str], None]:
    def show(run_id: str, stream: str, text: str) -> None:
        out = sys.stderr if as_json or stream == "stderr" else sys.stdout
        print(f"[{cell(run_id)}] {line(text)}", file=out, flush=True)

    return show


def _report(outcome: DispatchOutcome, *, wait: bool, as_json: bool, verb: str) -> int:
    statuses = [run.flow_status for run in outcome.runs]
    status = status_rule.worst(statuses) if wait and outcome.runs else None
    if as_json:
        import msgspec

        _print_json(
            {
                "status": outcome.status,
                "eventId": outcome.event_id,
                "matched": outcome.matched,
                "runIds": outcome.run_ids,
                "runs": msgspec.to_builtins(outcome.runs),
                "flowStatus": status,
            }
        )
    else:
        said = f"{cell(outcome.event_id)}: {cell(outcome.status)}"
        print(f"{verb} {said}, {len(outcome.run_ids)} run(s)")
        for run in outcome.runs:
            row = f"  {cell(run.id)}  {cell(run.flowName)}/{cell(run.stepName)}  {run.flow_status}"
            if run.error:
                row += f"  ({cell(run.error)})"
            print(row)
        if not outcome.runs:
            for run_id in outcome.run_ids:
                print(f"  {cell(run_id)}")
    if not outcome.run_ids:
        # Not ``matched``: codex-flows answers a duplicate with 0 and the existing run ids.
        print("warning: no flow matched this event", file=sys.stderr)
        return 0
    return status_rule.exit_code(status) if status is not None else 0


def dispatch(g: Globals, file: str, *, wait: bool, as_json: bool) -> int:
    from workspace_adapter.events import EventError, check_sendable
    from workspace_adapter.following import dispatch_and_follow

    event = _read_event(file)
    try:
        check_sendable(event)  # before connecting: bad input is exit 2, never a lost link
    except EventError as exc:
        raise UserError(f"{file}: {exc}; fix the event file") from None
    outcome = run_remote(
        lambda: dispatch_and_follow(g.backend_url, event, wait=wait, on_output=_on_output(as_json))
    )
    return _report(outcome, wait=wait, as_json=as_json, verb="dispatched")


def replay(g: Globals, event_id: str, *, wait: bool, as_json: bool) -> int:
    from workspace_adapter.following import replay_and_follow

    outcome = run_remote(
        lambda: replay_and_follow(g.backend_url, event_id, wait=wait, on_output=_on_output(as_json))
    )
    return _report(outcome, wait=wait, as_json=as_json, verb="replayed")


def _pages(g: Globals, method: str, key: str, params: dict[str, Any], limit: int) -> list[Any]:
    """Up to ``limit`` entries of a list method's ``key``, page after page: a reply the backend
    cut at its byte cap says where to go on (``nextCursor``)."""
    from workspace_adapter.client import call

    found: list[Any] = []
    while True:
        asked = {"limit": limit - len(found), **params}
        result = run_remote(functools.partial(call, g.backend_url, method, asked))
        found += result.get(key) or []
        cursor = result.get("nextCursor")
        if not isinstance(cursor, str) or not cursor or len(found) >= limit:
            return found
        params = {**params, "cursor": cursor}


def list_events(g: Globals, *, event_type: str | None, limit: int, as_json: bool) -> int:
    params: dict[str, Any] = {"type": event_type} if event_type else {}
    found: list[dict[str, Any]] = _pages(g, "flow.listEvents", "events", params, limit)
    if as_json:
        _print_json({"events": found})
        return 0
    for event in found:
        print("  ".join(cell(event.get(key, "")) for key in ("receivedAt", "type", "id")))
    if not found:
        print("no events")
    return 0


def list_runs(
    g: Globals, *, event_id: str | None, status: str | None, limit: int, as_json: bool
) -> int:
    import msgspec

    from workspace_adapter import protocol as rpc

    params: dict[str, Any] = {}
    if event_id:
        params["eventId"] = event_id
    if status:
        params["status"] = status
    found = _pages(g, "flow.listRuns", "runs", params, limit)
    runs = msgspec.convert(found, list[rpc.WireRun])
    if as_json:
        _print_json({"runs": msgspec.to_builtins(runs)})
        return 0
    for run in runs:
        result_status = cell(run.result_status or "-")
        print(
            f"{cell(run.id)}  {cell(run.status):<9}  {result_status:<18}  "
            f"{cell(run.flowName)}/{cell(run.stepName)}  {cell(run.eventId)}"
        )
    if not runs:
        print("no runs")
    return 0


def cancel(g: Globals, run_id: str, *, as_json: bool = False) -> int:
    import msgspec

    from workspace_adapter.client import cancel_run

    run = run_remote(lambda: cancel_run(g.backend_url, run_id))
    if as_json:
        _print_json(msgspec.to_builtins(run))
    else:
        print(f"{cell(run.id)}: {cell(run.status)}")
    return 0
