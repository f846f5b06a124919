"""Following a dispatch's runs to their end, streaming their output, across dropped connections.

Where the backend offers ``flow.subscribe`` (its ``capabilities.workspaceMethods``), a follower
subscribes to the event *before* ``dispatch`` and reads ``flow.run.updated`` /
``flow.run.output`` until every run ends; a backend without it (codex-flows' workspace backend)
is polled with ``flow.getRun`` instead (:func:`poll_runs`). Following survives a dropped
connection (:func:`follow_until_done`): the backend closes a subscriber that reads too slowly
(1008), or restarts; the follower connects again, subscribes again, re-reads the runs and goes
on, so it still ends with the runs' real outcome (the lines printed meanwhile are not shown, and
it says so). Output is handed to the caller's callback in a thread of its own through a bounded
buffer (:class:`OutputRelay`), so a slow reader of our own stdout never stops us reading the
socket.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from workspace_adapter import protocol as rpc
from workspace_adapter.base.errors import EXIT_BACKEND_UNREACHABLE, BackendUnreachable, UserError
from workspace_adapter.base.outputrelay import NoticeCallback, OutputRelay
from workspace_adapter.client import (
    ConnectionLost,
    WorkspaceClient,
    open_client,
    open_client_with_backoff,
    subscribe,
)
from workspace_adapter.protocol import WireRun

POLL_FIRST_SECONDS = 0.05
POLL_MAX_SECONDS = 1.0
"""Polling ``flow.getRun`` (no ``flow.subscribe``): 50 ms, doubling up to 1 s between rounds."""

RECONNECT_SECONDS = 30.0
"""How long a follower whose connection dropped keeps trying to reach the backend again."""
RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 2.0

OutputCallback = Callable[[str, str, str], None]
"""Called with (run id, stream, line) for each line a step prints."""


class DispatchOutcome(msgspec.Struct, kw_only=True):
    """What a dispatch ended with: the reply's fields and, when followed, the final runs."""

    status: str
    event_id: str
    matched: int
    run_ids: list[str]
    runs: list[WireRun] = msgspec.field(default_factory=list)

    @property
    def duplicate(self) -> bool:
        """The backend already had this event; ``run_ids`` are its existing runs.

        codex-flows answers a duplicate with ``matched: 0``, so only ``run_ids`` say whether
        any flow wanted the event.
        """
        return self.status == rpc.DispatchStatus.DUPLICATE


class FollowLost(UserError):
    """The connection dropped while following runs and the backend did not come back."""

    def __init__(self, url: str, run_ids: list[str], seconds: float) -> None:
        super().__init__(
            f"lost the backend at {url} while following {', '.join(run_ids)} and could not "
            f"reconnect within {seconds:g}s; `workspace show RUN_ID --follow` picks a run up again",
            EXIT_BACKEND_UNREACHABLE,
        )
        self.run_ids = run_ids


async def follow_runs(
    client: WorkspaceClient, run_ids: list[str], on_output: OutputCallback | None = None
) -> list[WireRun]:
    """Wait until every run has ended, streaming output.

    With ``flow.subscribe`` the client must already be subscribed (:func:`subscribe`);
    without it the runs are polled (:func:`poll_runs`).
    """
    if not client.offers("flow.subscribe"):
        return await poll_runs(client, run_ids, on_output)
    finished: dict[str, WireRun] = {}
    wanted = set(run_ids)

    def handle(note: rpc.Notification) -> None:
        try:
            if note.method == rpc.RUN_OUTPUT:
                line = rpc.decode_params(note, rpc.RunOutput)
                if on_output is not None and line.runId in wanted:
                    on_output(line.runId, line.stream, line.line)
            elif note.method == rpc.RUN_UPDATED:
                run = rpc.decode_params(note, rpc.RunUpdated).run
                if run.id in wanted and run.terminal:
                    finished[run.id] = run
        except msgspec.ValidationError:
            return  # not a notification we can read; the run's final state still comes

    try:
        # Runs that ended before we subscribed (a duplicate dispatch) send nothing more.
        for run_id in run_ids:
            got = await client.request(
                "flow.getRun", rpc.RunIdParams(runId=run_id), result=rpc.RunResult
            )
            if got.run.terminal:
                finished[run_id] = got.run
        # Lines that arrived while we asked are still ours to show, even for a finished run.
        while client.notifications:
            handle(client.notifications.popleft())
        while len(finished) < len(run_ids):
            handle(await client.next_notification())
    except ConnectionLost:
        # What did arrive before the drop is shown; a follower on a new connection goes on.
        while client.notifications:
            handle(client.notifications.popleft())
        raise
    return [finished[r] for r in run_ids]


async def poll_runs(
    client: WorkspaceClient,
    run_ids: list[str],
    on_output: OutputCallback | None = None,
    *,
    first: float = POLL_FIRST_SECONDS,
    longest: float = POLL_MAX_SECONDS,
) -> list[WireRun]:
    """Ask ``flow.getRun`` for each unfinished run until all have ended.

    Rounds are ``first`` seconds apart, doubling up to ``longest``. Such a backend streams no
    output: a run's ``stderr`` is handed to ``on_output`` once it has ended (its ``stdout`` is
    the runner's result JSON, read through the run itself).
    """
    finished: dict[str, WireRun] = {}
    delay = first
    while True:
        for run_id in run_ids:
            if run_id in finished:
                continue
            got = await client.request(
                "flow.getRun", rpc.RunIdParams(runId=run_id), result=rpc.RunResult
            )
            if got.run.terminal:
                finished[run_id] = got.run
                if on_output is not None:
                    for line in got.run.stderr.splitlines():
                        on_output(run_id, "stderr", line)
        client.notifications.clear()  # workspace.event and the like: nothing to follow
        if len(finished) == len(run_ids):
            return [finished[r] for r in run_ids]
        await anyio.sleep(delay)
        delay = min(longest, delay * 2)


def _stderr_notice(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


async def follow_until_done(
    client: WorkspaceClient,
    event_id: str,
    run_ids: list[str],
    on_output: OutputCallback | None = None,
    *,
    token: str | None = None,
    connect_timeout: float = 5.0,
    reconnect_for: float = RECONNECT_SECONDS,
    on_notice: NoticeCallback = _stderr_notice,
) -> list[WireRun]:
    """:func:`follow_runs` to the end, on a new connection each time the backend drops ours.

    ``client`` must already be subscribed to ``event_id`` where the backend offers it; it is
    closed here, with every later connection. Output goes through an :class:`OutputRelay`.
    After a drop (1008 for a slow reader, a restart, a lost network), the lines printed until
    the follower is back are not shown, and ``on_notice`` says so once per drop; the runs'
    final state is read again on the new connection, so the outcome is the real one.
    :class:`FollowLost` when the backend stays away for ``reconnect_for`` seconds.
    """
    relay = OutputRelay(on_output, on_notice) if on_output is not None else None
    session = client
    resubscribe = False
    try:
        while True:
            try:
                if resubscribe:
                    await subscribe(session, event_id)
                runs = await follow_runs(session, run_ids, relay)
            except ConnectionLost as lost:
                await session.close()
                said = f"the backend dropped this follower ({lost.detail}); reconnecting"
                (relay.notice if relay is not None else on_notice)(
                    f"{said}: output of {', '.join(run_ids)} until then is not shown"
                )
                try:
                    session = await _reconnect(session.url, token, connect_timeout, reconnect_for)
                except BackendUnreachable:
                    raise FollowLost(session.url, run_ids, reconnect_for) from None
                resubscribe = True
                continue
            if relay is not None:
                # Every line before the summary the caller prints next; blocks while our own
                # stdout is not read, as printing the summary would.
                await anyio.to_thread.run_sync(relay.close)
            return runs
    finally:
        if relay is not None:
            relay.close(drain=False)  # after an error; a no-op once drained
        await session.close()


async def _reconnect(
    url: str, token: str | None, connect_timeout: float, within: float
) -> WorkspaceClient:
    """A new session, trying with backoff for ``within`` seconds; else BackendUnreachable."""
    return await open_client_with_backoff(
        url,
        token,
        connect_timeout,
        first=RECONNECT_FIRST_SECONDS,
        most=RECONNECT_MAX_SECONDS,
        within=within,
    )


AcknowledgedCallback = Callable[["DispatchOutcome"], None]
"""Called with the dispatch's outcome (its event id and run ids) as soon as the backend
acknowledged it, before any run is followed."""


async def dispatch_and_follow(
    url: str,
    event: dict[str, Any],
    *,
    wait: bool = True,
    on_output: OutputCallback | None = None,
    on_acknowledged: AcknowledgedCallback | None = None,
    token: str | None = None,
    connect_timeout: float = 5.0,
) -> DispatchOutcome:
    """Dispatch ``event``; with ``wait``, follow its runs to their end, streaming output."""
    return await _send_and_follow(
        url,
        "flow.dispatch",
        rpc.DispatchParams(event=event),
        # A missing id is the backend's to refuse (-32602 naming it), not a KeyError here.
        str(event.get("id", "")),
        wait,
        on_output,
        on_acknowledged,
        token,
        connect_timeout,
    )


async def replay_and_follow(
    url: str,
    event_id: str,
    *,
    wait: bool = True,
    on_output: OutputCallback | None = None,
    on_acknowledged: AcknowledgedCallback | None = None,
    token: str | None = None,
    connect_timeout: float = 5.0,
) -> DispatchOutcome:
    """Replay a stored event; with ``wait``, follow the new runs like a dispatch."""
    return await _send_and_follow(
        url,
        "flow.replay",
        rpc.ReplayParams(eventId=event_id),
        event_id,
        wait,
        on_output,
        on_acknowledged,
        token,
        connect_timeout,
    )


async def _send_and_follow(
    url: str,
    method: str,
    params: rpc.DispatchParams | rpc.ReplayParams,
    event_id: str,
    wait: bool,
    on_output: OutputCallback | None,
    on_acknowledged: AcknowledgedCallback | None,
    token: str | None,
    connect_timeout: float,
) -> DispatchOutcome:
    client = await open_client(url, token, connect_timeout)
    try:
        if wait:
            # Before the dispatch, so not one line of a fast run is missed.
            await subscribe(client, event_id)
        reply = await client.request(method, params, result=rpc.DispatchResult)
        outcome = DispatchOutcome(
            status=reply.status,
            event_id=reply.eventId or event_id,
            matched=reply.matched,
            run_ids=reply.runIds,
        )
        if on_acknowledged is not None:
            on_acknowledged(outcome)
        if wait and outcome.run_ids:
            outcome.runs = await follow_until_done(
                client,
                outcome.event_id,
                outcome.run_ids,
                on_output,
                token=token,
                connect_timeout=connect_timeout,
            )
        return outcome
    finally:
        await client.close()  # again after follow_until_done closed it: a no-op
