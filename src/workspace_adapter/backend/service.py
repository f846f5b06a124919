"""What each backend method does, for the WebSocket and the HTTP routes alike.

One table, :data:`METHODS`, names every JSON-RPC method with its params struct (see
:mod:`workspace_adapter.protocol`) and its handler; ``workspace.initialize`` advertises the same
table. Handlers return plain results or raise :class:`RpcFault`. Nothing here knows about
sockets.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import Any, NamedTuple, TypeVar

import anyio
import msgspec

from workspace_adapter import protocol as rpc
from workspace_adapter.backend import passthrough
from workspace_adapter.backend.appserver import AppServerLink
from workspace_adapter.backend.records import FlowRun, new_flow_run
from workspace_adapter.backend.runqueue import RunQueue
from workspace_adapter.backend.store import BackendStore
from workspace_adapter.backend.subscriptions import (
    MAX_SUBSCRIPTIONS_PER_CONNECTION,
    Outbox,
    SubscriptionHub,
    TooManySubscriptions,
)
from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.sqlitefile import StoreUnavailable
from workspace_adapter.base.times import utc_now_iso
from workspace_adapter.events import (
    EventError,
    as_event_record,
    event_of,
    event_record,
    normalize_event,
)
from workspace_adapter.flows.catalog import FlowCatalog


def _nothing() -> None:
    pass


def _unknown(field: str, value: str) -> rpc.RpcFault:
    return rpc.bad_params(field, f"no such {field.removesuffix('Id')}: {value}")


# How long a client should wait before retrying a write the store could not take.
RETRY_AFTER_SECONDS = {"busy": 1, "full": 30}
# Encoded records a list reply carries at most (always at least one); the rest is a cursor away.
LIST_REPLY_BYTES = 4 * 1024 * 1024

Row = TypeVar("Row")


def _before(cursor: str | None) -> int | None:
    return None if cursor is None else int(cursor)


def _page(
    rows: Generator[tuple[int, Row], None, None],
    limit: int,
    encode: Callable[[Row], bytes],
    budget: int = LIST_REPLY_BYTES,
) -> tuple[list[msgspec.Raw], str | msgspec.UnsetType]:
    """Up to ``limit`` of ``rows``, each encoded, and the cursor past the last one when the
    next would have taken the records past ``budget`` bytes (else UNSET: nothing was cut).

    Rows are read one at a time, so a long list never sits in memory whole.
    """
    records: list[msgspec.Raw] = []
    size, last = 0, 0
    with contextlib.closing(rows):
        for seq, row in itertools.islice(rows, limit):
            record = encode(row)
            if records and size + len(record) > budget:
                return records, str(last)
            records.append(msgspec.Raw(record))
            size, last = size + len(record), seq
    return records, msgspec.UNSET


def store_fault(problem: StoreUnavailable) -> rpc.RpcFault:
    """The retryable -32001 a client gets when the store cannot take a write."""
    return rpc.RpcFault(
        rpc.OVERLOADED,
        problem.message,
        data={
            "reason": f"store_{problem.reason}",
            "retryAfter": RETRY_AFTER_SECONDS[problem.reason],
        },
    )


class BackendService:
    """The backend's methods over its store, flow catalog, run queue and subscriptions."""

    def __init__(
        self,
        *,
        store: BackendStore,
        catalog: FlowCatalog,
        queue: RunQueue,
        hub: SubscriptionHub,
        on_write: Callable[[], None] | None = None,
        app_server: AppServerLink | None = None,
    ) -> None:
        self.store = store
        # The app-server behind appServer.*; None when no URL was given (they are then unknown).
        self.app_server = app_server
        # Told after each committed dispatch or replay (the daemon's WAL checkpoints).
        self._on_write = on_write or _nothing
        self.catalog = catalog
        self.queue = queue
        self.hub = hub
        # List reads share one reader connection: one thread at a time, not one per caller.
        self._list_reads = anyio.CapacityLimiter(1)
        self._log = get_logger(component="backend")

    @contextlib.contextmanager
    def _store_writes(self, action: str, **context: str) -> Iterator[None]:
        """Turn a write the store could not take into a retryable fault, and log it."""
        try:
            yield
        except StoreUnavailable as problem:
            raise self._store_fault(action, problem, **context) from None

    def _store_fault(self, action: str, problem: StoreUnavailable, **context: str) -> rpc.RpcFault:
        self._log.warning(
            f"{action}.store_unavailable",
            **context,
            reason=problem.reason,
            problem=str(problem.__cause__ or problem),
        )
        return store_fault(problem)

    async def call(self, method: str, params: dict[str, Any], outbox: Outbox | None = None) -> Any:
        """Run one decoded JSON-RPC call; ``outbox`` is the caller's, for subscriptions."""
        entry = METHODS.get(method)
        if entry is None or (entry.params is None and self.app_server is None):
            raise rpc.RpcFault(rpc.METHOD_NOT_FOUND, f"method not found: {method}")
        if entry.params is None:  # the app-server's: checked as codex-flows checks them
            return await entry.handler(self, (method, params), outbox)
        return await entry.handler(self, rpc.parse_params(entry.params, params), outbox)

    # --- the handlers, as the table calls them -----------------------------------------------

    async def _initialize(self, params: rpc.InitializeParams, outbox: Outbox | None) -> Any:
        return rpc.initialize_result(METHODS, app_server=self.app_server is not None)

    async def _dispatch(self, params: rpc.DispatchParams, outbox: Outbox | None) -> Any:
        return await self.dispatch(params.event, wait=params.wait)

    async def _replay(self, params: rpc.ReplayParams, outbox: Outbox | None) -> Any:
        return await self.replay(params.eventId, wait=params.wait)

    async def _list_events(self, params: rpc.ListEventsParams, outbox: Outbox | None) -> Any:
        return await self.list_events(params.type, params.limit, params.cursor)

    async def _get_event(self, params: rpc.GetEventParams, outbox: Outbox | None) -> Any:
        return self.get_event(params.eventId)

    async def _list_runs(self, params: rpc.ListRunsParams, outbox: Outbox | None) -> Any:
        return await self.list_runs(params.eventId, params.status, params.limit, params.cursor)

    async def _get_run(self, params: rpc.RunIdParams, outbox: Outbox | None) -> Any:
        return rpc.RunResult(self.get_run(params.runId))

    async def _cancel_run(self, params: rpc.RunIdParams, outbox: Outbox | None) -> Any:
        return rpc.RunResult(await self.cancel_run(params.runId))

    async def _subscribe(self, params: rpc.SubscribeParams, outbox: Outbox | None) -> Any:
        if outbox is None:
            raise rpc.RpcFault(rpc.INVALID_REQUEST, "subscriptions need a WebSocket")
        try:
            return rpc.SubscribeResult(self.hub.subscribe(outbox, params.eventId, params.runId))
        except TooManySubscriptions:
            raise rpc.RpcFault(
                rpc.OVERLOADED,
                f"overloaded: a connection holds at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} "
                "subscriptions; unsubscribe first",
            ) from None

    async def _unsubscribe_call(self, params: rpc.UnsubscribeParams, outbox: Outbox | None) -> Any:
        return self._unsubscribe(params, outbox)

    # --- the app-server pass-through ---------------------------------------------------------

    async def _app_server_call(
        self, call: tuple[str, dict[str, Any]], outbox: Outbox | None
    ) -> Any:
        assert self.app_server is not None
        return await self.app_server.call(passthrough.parse_app_server_call(*call))

    async def _app_server_notify(
        self, call: tuple[str, dict[str, Any]], outbox: Outbox | None
    ) -> Any:
        assert self.app_server is not None
        return await self.app_server.notify(passthrough.parse_app_server_call(*call))

    async def _app_server_respond(
        self, call: tuple[str, dict[str, Any]], outbox: Outbox | None
    ) -> Any:
        assert self.app_server is not None
        return await self.app_server.respond(passthrough.parse_app_server_reply(*call))

    # --- dispatch and replay -----------------------------------------------------------------

    async def dispatch(self, raw_event: Any, *, wait: bool = False) -> rpc.DispatchResult:
        """Validate, store with its matched runs in one transaction, queue the runs."""
        try:
            event = normalize_event(raw_event)
        except EventError as exc:
            field = f"event.{exc.field}" if exc.field else "event"
            raise rpc.RpcFault(
                rpc.INVALID_PARAMS, f"invalid params: {exc}", data={"field": field}
            ) from None
        runs = self._new_runs(event["id"], event)
        # Not _store_writes: a generator context manager is a measurable part of a dispatch.
        try:
            record = await self.store.writer.dispatch(event_record(event, utc_now_iso()), runs)
        except StoreUnavailable as problem:
            raise self._store_fault("dispatch", problem, event_id=event["id"]) from None
        self._on_write()
        duplicate = record.status == rpc.DispatchStatus.DUPLICATE
        if not duplicate and runs:
            self.queue.submit(record.runs)
            self._log.info("event.dispatched", event_id=event["id"], matched=len(runs))
        elif not duplicate:
            # An event no flow wants is the common case under load: not worth an info line.
            self._log.debug("event.dispatched", event_id=event["id"], matched=0)
        return await self._reply(record.status, event["id"], record.run_ids, duplicate, wait)

    async def replay(self, event_id: str, *, wait: bool = False) -> rpc.DispatchResult:
        """Run a stored event again: new runs whose ids end ``_replay``."""
        stored = self.store.get_event(event_id)
        if stored is None:
            raise _unknown("eventId", event_id)
        runs = self._new_runs(event_id, event_of(stored), replay=True)
        with self._store_writes("replay", event_id=event_id):
            await self.store.writer.add_runs(runs)
        self._on_write()
        self.queue.submit(runs)
        self._log.info("event.replayed", event_id=event_id, matched=len(runs))
        return await self._reply(
            rpc.DispatchStatus.ACCEPTED, event_id, [r.id for r in runs], False, wait
        )

    def _new_runs(
        self, event_id: str, event: dict[str, Any], *, replay: bool = False
    ) -> list[FlowRun]:
        """A queued run per matching step, or a retryable fault when the queue has no room."""
        matches = self.catalog.matching(event)
        if matches and not self.queue.has_room(len(matches)):
            raise rpc.RpcFault(rpc.OVERLOADED, "overloaded: the run queue is full; retry later")
        return [new_flow_run(event_id, p.name, s.name, replay=replay) for p, s in matches]

    async def _reply(
        self,
        status: rpc.DispatchStatus,
        event_id: str,
        run_ids: list[str],
        idempotent: bool,
        wait: bool,
    ) -> rpc.DispatchResult:
        runs: list[rpc.WireRun] | msgspec.UnsetType = msgspec.UNSET
        if wait:
            runs = [r.to_wire() for r in await self.queue.wait_for(run_ids)]
        return rpc.DispatchResult(
            status=status,
            eventId=event_id,
            runIds=run_ids,
            # codex-flows counts what this dispatch matched: nothing, for a duplicate.
            matched=0 if idempotent else len(run_ids),
            idempotent=idempotent,
            runs=runs,
        )

    # --- inspection --------------------------------------------------------------------------

    async def list_events(
        self, event_type: str | None, limit: int, cursor: str | None = None
    ) -> rpc.EventsPage:
        """The newest ``limit`` events from ``cursor`` on, cut at :data:`LIST_REPLY_BYTES`."""

        def read() -> rpc.EventsPage:
            rows = self.store.events_newest_first(event_type, _before(cursor))
            events, next_cursor = _page(rows, limit, lambda e: rpc.encode_json(as_event_record(e)))
            return rpc.EventsPage(events, nextCursor=next_cursor)

        return await anyio.to_thread.run_sync(read, limiter=self._list_reads)

    def get_event(self, event_id: str) -> rpc.EventResult:
        stored = self.store.get_event(event_id)
        if stored is None:
            raise _unknown("eventId", event_id)
        runs = [r.to_wire() for r in self.store.runs_of_event(event_id)]
        return rpc.EventResult(as_event_record(stored), runs)

    async def list_runs(
        self, event_id: str | None, status: str | None, limit: int, cursor: str | None = None
    ) -> rpc.RunsPage:
        """``{runs}`` as :meth:`list_events`, with ``eventId`` echoed first when the runs were
        filtered by it."""

        def read() -> rpc.RunsPage:
            rows = self.store.runs_newest_first(event_id, status, _before(cursor))
            runs, next_cursor = _page(rows, limit, lambda r: rpc.encode_json(r.to_wire()))
            echo = msgspec.UNSET if event_id is None else event_id
            return rpc.RunsPage(eventId=echo, runs=runs, nextCursor=next_cursor)

        return await anyio.to_thread.run_sync(read, limiter=self._list_reads)

    def get_run(self, run_id: str) -> rpc.WireRun:
        run = self.queue.record(run_id)
        if run is None:
            raise _unknown("runId", run_id)
        return run.to_wire()

    async def cancel_run(self, run_id: str) -> rpc.WireRun:
        with self._store_writes("cancel", run_id=run_id):
            run = await self.queue.cancel(run_id)
        if run is None:
            raise _unknown("runId", run_id)
        return run.to_wire()

    def _unsubscribe(
        self, params: rpc.UnsubscribeParams, outbox: Outbox | None
    ) -> rpc.UnsubscribeResult:
        if params.subscriptionId is not None:
            sub = next(
                (s for s in self.hub.subscriptions_of(outbox) if s.id == params.subscriptionId)
                if outbox is not None
                else iter(()),
                None,
            )
            removed = [sub.id] if sub is not None and self.hub.unsubscribe(sub.id) else []
        elif outbox is not None:
            removed = [
                s.id
                for s in self.hub.subscriptions_of(outbox)
                if s.event_id == params.eventId
                and s.run_id == params.runId
                and self.hub.unsubscribe(s.id)
            ]
        else:
            removed = []
        return rpc.UnsubscribeResult(removed[0] if removed else None, removed)


Handler = Callable[[BackendService, Any, Outbox | None], Awaitable[Any]]


class Method(NamedTuple):
    """A JSON-RPC method the backend serves: the struct its params decode into, its handler.

    ``params`` None: an ``appServer.*`` method, served only with an app-server configured;
    its handler gets ``(method, params)`` as sent.
    """

    params: type[msgspec.Struct] | None
    handler: Handler


METHODS: dict[str, Method] = {
    "workspace.initialize": Method(rpc.InitializeParams, BackendService._initialize),
    "flow.dispatch": Method(rpc.DispatchParams, BackendService._dispatch),
    "flow.replay": Method(rpc.ReplayParams, BackendService._replay),
    "flow.listEvents": Method(rpc.ListEventsParams, BackendService._list_events),
    "flow.getEvent": Method(rpc.GetEventParams, BackendService._get_event),
    "flow.listRuns": Method(rpc.ListRunsParams, BackendService._list_runs),
    "flow.getRun": Method(rpc.RunIdParams, BackendService._get_run),
    "flow.cancelRun": Method(rpc.RunIdParams, BackendService._cancel_run),
    "flow.subscribe": Method(rpc.SubscribeParams, BackendService._subscribe),
    "flow.unsubscribe": Method(rpc.UnsubscribeParams, BackendService._unsubscribe_call),
    "appServer.call": Method(None, BackendService._app_server_call),
    "appServer.notify": Method(None, BackendService._app_server_notify),
    "appServer.respond": Method(None, BackendService._app_server_respond),
    "appServer.respondError": Method(None, BackendService._app_server_respond),
}
