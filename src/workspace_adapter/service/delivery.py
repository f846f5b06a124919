"""Delivering a maintenance attempt to the backend and folding its runs back into it.

One connection per attempt: subscribe to the event *before* sending it (so no line of a fast
run is lost), send it (``flow.dispatch``, or ``flow.replay`` for a replay, or for a retry of an
event the backend already knows), mark the attempt ``started`` as soon as the backend has it,
follow the runs to their end, then store their worst flow status, run ids, candidate refs,
patch tables and messages. An attempt the backend never received is ``undelivered`` and is
redelivered later, with a backoff stored in the attempt.
"""

from __future__ import annotations

import datetime as dt
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TextIO, TypeVar

import anyio.to_thread
import msgspec

from workspace_adapter import client as wsclient
from workspace_adapter import following
from workspace_adapter import protocol as rpc
from workspace_adapter.base import display, logs
from workspace_adapter.base import status as status_rule
from workspace_adapter.base.errors import BackendUnreachable
from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.status import Status
from workspace_adapter.base.times import iso, utc_now
from workspace_adapter.events import is_result_line
from workspace_adapter.protocol import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    OVERLOADED,
    DispatchResult,
    WireRun,
)
from workspace_adapter.service import notify
from workspace_adapter.service.records import Records
from workspace_adapter.service.schema import UNREACHABLE, Attempt

REDELIVERY_FIRST_SECONDS = 1.0
REDELIVERY_MAX_SECONDS = 600.0

Clock = Callable[[], dt.datetime]
P = ParamSpec("P")
T = TypeVar("T")


async def off_loop(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a records call in a worker thread.

    A write waits (up to the store's timeout) for SQLite's lock while another watcher writes;
    on the event loop that wait would stall everything else on it (in ``serve``, the backend).
    """
    return await anyio.to_thread.run_sync(functools.partial(call, *args, **kwargs))


def redelivery_delay(deliveries: int) -> float:
    """Seconds before the next try after ``deliveries`` failed ones: 1, 2, 4 … 600."""
    doublings = min(30, max(0, deliveries - 1))
    return min(REDELIVERY_MAX_SECONDS, REDELIVERY_FIRST_SECONDS * (1 << doublings))


def _unknown_event(exc: wsclient.RpcError) -> bool:
    """The backend does not know the event: our -32602, or codex-flows' -32603 saying so."""
    return exc.code == INVALID_PARAMS or (
        exc.code == INTERNAL_ERROR and "Unknown event: " in exc.message
    )


class _NotSent(Exception):
    """The backend did not take the attempt; ``message`` says why, ``retry`` if it may later."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry


class RunOutcome(msgspec.Struct, kw_only=True):
    """What an attempt's ended runs add up to, as its record keeps it."""

    status: Status
    run_statuses: dict[str, Status] = msgspec.field(default_factory=dict)  # run id → status
    candidate_refs: list[Any] = msgspec.field(default_factory=list)
    patches: list[dict[str, Any]] = msgspec.field(default_factory=list)
    message: str | None = None


def run_outcome(runs: list[WireRun]) -> RunOutcome:
    """The worst flow status of ended runs, and their candidate refs, patches and messages."""
    outcome = RunOutcome(status=status_rule.worst([run.flow_status for run in runs]))
    messages: list[str] = []
    for run in runs:
        outcome.run_statuses[run.id] = run.flow_status
        found = run.artifacts.get("candidateRefs")
        if isinstance(found, list):
            outcome.candidate_refs.extend(found)
        found = run.artifacts.get("patches")
        if isinstance(found, list):
            outcome.patches.extend(entry for entry in found if isinstance(entry, dict))
        text = run.step_message
        if text and text not in messages:
            messages.append(text if len(runs) == 1 else f"{run.stepName}: {text}")
    outcome.message = "; ".join(messages) or None
    return outcome


class AttemptDelivery:
    """Sends attempts to one backend and records what became of them."""

    def __init__(
        self,
        records: Records,
        backend_url: str,
        root: Path,
        *,
        notify_command: list[str] | None = None,
        out: TextIO | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.records = records
        self.backend_url = backend_url
        self.root = root
        self.notify_command = notify_command
        self.out = out or sys.stdout
        self.clock = clock
        self.log = get_logger(component="watch")

    def say(self, line: str) -> None:
        """One line to the operator; tags, ids and reasons come from outside: escaped."""
        print(display.cell(line), file=self.out, flush=True)

    def _on_output(self, run_id: str, stream: str, line: str) -> None:
        if stream == "stdout" and is_result_line(line):
            return  # the attempt's summary line says it in words
        logs.notice(
            "run.output", f"  {run_id} | {display.line(line)}", run_id=run_id, stream=stream
        )

    async def deliver(self, attempt: Attempt) -> Attempt:
        """Send a claimed attempt, follow its runs, and return it as recorded at the end."""
        log = self.log.bind(attempt_id=attempt.id, event_id=attempt.event_id)
        try:
            session = await wsclient.open_client(self.backend_url)
        except BackendUnreachable as exc:
            return await self._undelivered(attempt, UNREACHABLE, detail=exc.message)
        try:
            try:
                await wsclient.subscribe(session, attempt.event_id)
                method, reply = await self._send(session, attempt)
            except _NotSent as exc:
                return await self._not_sent(attempt, exc)
            except wsclient.RpcError as exc:
                retry = exc.code == OVERLOADED
                return await self._not_sent(attempt, _NotSent(exc.message, retry=retry))
            except (wsclient.ConnectionLost, TimeoutError) as exc:
                # Maybe stored, maybe not: sending again is safe, the backend dedups by id.
                detail = str(exc) or type(exc).__name__
                return await self._undelivered(attempt, UNREACHABLE, detail=detail)
            run_ids = reply.runIds
            await off_loop(
                self.records.log_dispatch,
                attempt,
                method,
                reply.status,
                self.clock(),
                run_ids=run_ids,
                matched=reply.matched,
            )
            log.info("attempt.sent", method=method, status=reply.status, run_ids=run_ids)
            if not run_ids:
                event = await off_loop(self.records.event, attempt.event_id) or {}
                why = f"no flow matched {event.get('type', 'the event')}"
                return await self._finish(attempt, RunOutcome(status=Status.SKIPPED, message=why))
            started = await off_loop(self.records.mark_started, attempt.id, run_ids, self.clock())
            self.say(
                f"attempt {attempt.id} {attempt.upstream_tag}: started runs {', '.join(run_ids)}"
            )
            return await self._follow(session, started)
        finally:
            await session.close()

    async def follow_again(self, attempt: Attempt) -> Attempt:
        """Follow a ``started`` attempt whose follower died, to the end of its runs."""
        try:
            session = await wsclient.open_client(self.backend_url)
        except BackendUnreachable:
            await off_loop(self.records.release, attempt.id)
            return attempt
        try:
            try:
                await wsclient.subscribe(session, attempt.event_id)
            except (wsclient.ConnectionLost, wsclient.RpcError, TimeoutError):
                await off_loop(self.records.release, attempt.id)
                return attempt
            return await self._follow(session, attempt)
        finally:
            await session.close()

    async def _follow(self, session: wsclient.WorkspaceClient, attempt: Attempt) -> Attempt:
        try:
            runs = await following.follow_runs(session, attempt.run_ids, self._on_output)
        except (wsclient.ConnectionLost, wsclient.RpcError, TimeoutError) as exc:
            # The backend has the event and its runs; whoever watches next follows them.
            await off_loop(self.records.release, attempt.id)
            self.log.info(
                "attempt.follow_lost", attempt_id=attempt.id, error=str(exc) or type(exc).__name__
            )
            self.say(
                f"attempt {attempt.id} {attempt.upstream_tag}: started; lost the backend "
                "while following (the next `workspace watch` follows it again)"
            )
            return attempt
        return await self._finish(attempt, run_outcome(runs))

    async def _send(
        self, session: wsclient.WorkspaceClient, attempt: Attempt
    ) -> tuple[str, DispatchResult]:
        """Send by the attempt's operation; (method used, reply)."""
        method = "flow.replay" if attempt.operation == "replay" else "flow.dispatch"
        if attempt.operation == "retry" and await self._backend_knows(session, attempt.event_id):
            method = "flow.replay"
        params: rpc.ReplayParams | rpc.DispatchParams
        if method == "flow.replay":
            params = rpc.ReplayParams(eventId=attempt.event_id)
        else:
            event = await off_loop(self.records.event, attempt.event_id)
            if event is None:
                raise _NotSent(f"event {attempt.event_id} is not in the records", retry=False)
            params = rpc.DispatchParams(event=event)
        try:
            reply = await session.request(method, params, result=DispatchResult)
        except wsclient.RpcError as exc:
            if exc.code == OVERLOADED:
                raise _NotSent(f"backend overloaded: {exc.message}", retry=True) from None
            if method == "flow.replay" and _unknown_event(exc):
                raise _NotSent(
                    f"the backend does not know event {attempt.event_id}; "
                    f"`workspace attempts retry {attempt.retry_of or attempt.id}` dispatches "
                    "it again",
                    retry=False,
                ) from None
            raise _NotSent(exc.message, retry=False) from None
        return method, reply

    async def _backend_knows(self, session: wsclient.WorkspaceClient, event_id: str) -> bool:
        try:
            await session.request("flow.getEvent", rpc.GetEventParams(eventId=event_id))
        except wsclient.RpcError as exc:
            if _unknown_event(exc):
                return False
            raise _NotSent(exc.message, retry=exc.code == OVERLOADED) from None
        return True

    async def _not_sent(self, attempt: Attempt, exc: _NotSent) -> Attempt:
        if exc.retry:
            return await self._undelivered(attempt, exc.message)
        # Refused for good (a bad event, one the backend does not know): do not send it again.
        await off_loop(
            self.records.log_dispatch, attempt, "-", "refused", self.clock(), message=exc.message
        )
        return await self._finish(attempt, RunOutcome(status=Status.FAILED, message=exc.message))

    async def _undelivered(
        self, attempt: Attempt, message: str, detail: str | None = None
    ) -> Attempt:
        now = self.clock()
        delay = redelivery_delay(attempt.deliveries + 1)
        retry_at = iso(now + dt.timedelta(seconds=delay))
        await off_loop(
            self.records.log_dispatch,
            attempt,
            "-",
            Status.UNDELIVERED,
            now,
            message=detail or message,
        )
        done = await off_loop(self.records.mark_undelivered, attempt.id, message, now, retry_at)
        # The line below says it on the terminal; the log keeps the detail.
        self.log.info(
            "attempt.undelivered",
            attempt_id=attempt.id,
            error=message,
            detail=detail,
            retry_at=retry_at,
        )
        self.say(
            f"attempt {attempt.id} {attempt.upstream_tag}: undelivered ({message}); "
            f"next try at {retry_at}"
        )
        return done

    async def _finish(self, attempt: Attempt, outcome: RunOutcome) -> Attempt:
        done = await off_loop(
            self.records.finish,
            attempt.id,
            outcome.status,
            self.clock(),
            run_ids=list(outcome.run_statuses) or attempt.run_ids,
            run_statuses=dict(outcome.run_statuses),
            candidate_refs=outcome.candidate_refs,
            patches=outcome.patches,
            message=outcome.message,
        )
        why = f" ({outcome.message})" if outcome.message else ""
        self.say(f"attempt {done.id} {done.upstream_tag}: {done.status}{why}")
        for ref in outcome.candidate_refs:
            if isinstance(ref, dict):
                self.say(f"  candidate {ref.get('remote')} {ref.get('ref')} {ref.get('sha')}")
        if self.notify_command and notify.needs_notice(done):
            await notify.notify(self.notify_command, done, self.root)
        return done
