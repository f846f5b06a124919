"""What each backend method does, for the WebSocket and the HTTP routes alike.

Methods take typed params (see :mod:`workspace_adapter.protocol`) and return plain results, or
raise :class:`RpcFault`. Nothing here knows about sockets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

from workspace_adapter import protocol as rpc
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
from workspace_adapter.events import EventError, normalize_event
from workspace_adapter.flows.package import (
    FLOW_DIRS,
    FlowDiscovery,
    FlowPackage,
    FlowStep,
    discover_flows,
    matching_steps,
)

# How often a dispatch may look at the flow folders for edits.
CATALOG_RECHECK_SECONDS = 1.0


class FlowCatalog:
    """The flow packages under a workspace root, reloaded when a ``flow.toml`` changes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._log = get_logger(component="flows")
        self._stamp = self._fingerprint()
        self._checked = time.monotonic()
        self.discovery = self._discover()

    def _discover(self) -> FlowDiscovery:
        discovery = discover_flows(self.root)
        for error in discovery.errors:
            self._log.warning("flow.invalid", problem=str(error))
        return discovery

    def _fingerprint(self) -> tuple[tuple[str, int], ...]:
        stamps: list[tuple[str, int]] = []
        for sub in FLOW_DIRS:
            base = self.root / sub
            if not base.is_dir():
                continue
            stamps.append((str(base), base.stat().st_mtime_ns))
            for folder in base.iterdir():
                for name in ("flow.toml", "schemas", "."):
                    try:
                        stamps.append((str(folder / name), (folder / name).stat().st_mtime_ns))
                    except OSError:
                        continue
        return tuple(sorted(stamps))

    def packages(self) -> list[FlowPackage]:
        now = time.monotonic()
        if now - self._checked >= CATALOG_RECHECK_SECONDS:
            self._checked = now
            stamp = self._fingerprint()
            if stamp != self._stamp:
                self._stamp = stamp
                self.discovery = self._discover()
        return self.discovery.packages

    def find(self, flow_name: str, step_name: str) -> tuple[FlowPackage, FlowStep] | None:
        package = next((p for p in self.packages() if p.name == flow_name), None)
        if package is None:
            return None
        step = next((s for s in package.steps if s.name == step_name), None)
        return None if step is None else (package, step)


def _unknown(field: str, value: str) -> rpc.RpcFault:
    return rpc.bad_params(field, f"no such {field.removesuffix('Id')}: {value}")


# How long a client should wait before retrying a write the store could not take.
RETRY_AFTER_SECONDS = {"busy": 1, "full": 30}


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
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.queue = queue
        self.hub = hub
        self._log = get_logger(component="backend")

    @contextlib.contextmanager
    def _store_writes(self, action: str, **context: str) -> Iterator[None]:
        """Turn a write the store could not take into a retryable fault, and log it."""
        try:
            yield
        except StoreUnavailable as problem:
            self._log.warning(
                f"{action}.store_unavailable",
                **context,
                reason=problem.reason,
                problem=str(problem.__cause__ or problem),
            )
            raise store_fault(problem) from None

    async def call(self, method: str, params: Any, outbox: Outbox | None = None) -> Any:
        """Run one decoded JSON-RPC method; ``outbox`` is the caller's, for subscriptions."""
        if method == "workspace.initialize":
            return rpc.initialize_result()
        if method == "flow.dispatch":
            return await self.dispatch(params.event, wait=params.wait)
        if method == "flow.replay":
            return await self.replay(params.eventId, wait=params.wait)
        if method == "flow.listEvents":
            return {"events": await self.list_events(params.type, params.limit)}
        if method == "flow.getEvent":
            return self.get_event(params.eventId)
        if method == "flow.listRuns":
            return {"runs": await self.list_runs(params.eventId, params.status, params.limit)}
        if method == "flow.getRun":
            return {"run": self.get_run(params.runId)}
        if method == "flow.cancelRun":
            return {"run": await self.cancel_run(params.runId)}
        if method == "flow.subscribe":
            if outbox is None:
                raise rpc.RpcFault(rpc.INVALID_REQUEST, "subscriptions need a WebSocket")
            try:
                return {"subscriptionId": self.hub.subscribe(outbox, params.eventId, params.runId)}
            except TooManySubscriptions:
                raise rpc.RpcFault(
                    rpc.OVERLOADED,
                    f"overloaded: a connection holds at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} "
                    "subscriptions; unsubscribe first",
                ) from None
        if method == "flow.unsubscribe":
            return self._unsubscribe(params, outbox)
        raise rpc.RpcFault(rpc.METHOD_NOT_FOUND, f"method not found: {method}")

    # --- dispatch and replay -----------------------------------------------------------------

    async def dispatch(self, raw_event: Any, *, wait: bool = False) -> dict[str, Any]:
        """Validate, store with its matched runs in one transaction, queue the runs."""
        try:
            event = normalize_event(raw_event)
        except EventError as exc:
            field = f"event.{exc.field}" if exc.field else "event"
            raise rpc.RpcFault(
                rpc.INVALID_PARAMS, f"invalid params: {exc}", data={"field": field}
            ) from None
        runs = self._new_runs(event["id"], event)
        with self._store_writes("dispatch", event_id=event["id"]):
            record = await self.store.writer.dispatch(event, runs)
        duplicate = record.status == "duplicate"
        if not duplicate:
            self.queue.submit(record.runs)
            self._log.info("event.dispatched", event_id=event["id"], matched=len(runs))
        return await self._reply(record.status, event["id"], record.run_ids, duplicate, wait)

    async def replay(self, event_id: str, *, wait: bool = False) -> dict[str, Any]:
        """Run a stored event again: new runs whose ids end ``_replay``."""
        event = self.store.get_event(event_id)
        if event is None:
            raise _unknown("eventId", event_id)
        runs = self._new_runs(event_id, event, replay=True)
        with self._store_writes("replay", event_id=event_id):
            await self.store.writer.add_runs(runs)
        self.queue.submit(runs)
        self._log.info("event.replayed", event_id=event_id, matched=len(runs))
        return await self._reply("accepted", event_id, [r.id for r in runs], False, wait)

    def _new_runs(
        self, event_id: str, event: dict[str, Any], *, replay: bool = False
    ) -> list[FlowRun]:
        """A queued run per matching step, or a retryable fault when the queue has no room."""
        matches = matching_steps(self.catalog.packages(), event)
        if not self.queue.has_room(len(matches)):
            raise rpc.RpcFault(rpc.OVERLOADED, "overloaded: the run queue is full; retry later")
        return [new_flow_run(event_id, p.name, s.name, replay=replay) for p, s in matches]

    async def _reply(
        self, status: str, event_id: str, run_ids: list[str], idempotent: bool, wait: bool
    ) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "status": status,
            "eventId": event_id,
            "runIds": run_ids,
            "matched": len(run_ids),
            "idempotent": idempotent,
        }
        if wait:
            reply["runs"] = [r.to_wire() for r in await self.queue.wait_for(run_ids)]
        return reply

    # --- inspection --------------------------------------------------------------------------

    async def list_events(self, event_type: str | None, limit: int) -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(self.store.list_events, event_type, limit)

    def get_event(self, event_id: str) -> dict[str, Any]:
        event = self.store.get_event(event_id)
        if event is None:
            raise _unknown("eventId", event_id)
        return {"event": event, "runs": [r.to_wire() for r in self.store.runs_of_event(event_id)]}

    async def list_runs(
        self, event_id: str | None, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        runs: list[FlowRun] = await anyio.to_thread.run_sync(
            self.store.list_runs, event_id, status, limit
        )
        return [r.to_wire() for r in runs]

    def get_run(self, run_id: str) -> dict[str, Any]:
        run = self.store.get_run(run_id)
        if run is None:
            raise _unknown("runId", run_id)
        return run.to_wire()

    async def cancel_run(self, run_id: str) -> dict[str, Any]:
        with self._store_writes("cancel", run_id=run_id):
            run = await self.queue.cancel(run_id)
        if run is None:
            raise _unknown("runId", run_id)
        return run.to_wire()

    def _unsubscribe(self, params: rpc.UnsubscribeParams, outbox: Outbox | None) -> dict[str, Any]:
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
        return {"subscriptionId": removed[0] if removed else None, "removed": removed}
