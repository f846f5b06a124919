"""A stand-in for codex-flows' workspace backend (0.3.5), for client tests.

A real WebSocket server (the ``websockets`` library's threaded server) on a free loopback
port that serves only what codex-flows' backend serves for flows, in its words and shapes, as
recorded in ``tests/compat/fixtures/`` (each reply below names the fixture it mirrors):
``workspace.initialize``, ``flow.dispatch``, ``flow.getRun``, ``flow.listRuns``,
``flow.listEvents``, ``flow.getEvent`` and ``flow.replay``. No ``flow.subscribe``, no
``flow.cancelRun``, no ``flow.run.*`` notifications: a client must poll ``flow.getRun``. A
run's ``status`` is the runner *process* status (queued → running → completed|failed, one
step further each time ``flow.getRun`` asks for it); the flow's own outcome is in the
``resultJson`` string. The app-server pass-through (``appServer.*``) is not served.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import json
import re
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

SERVER_INFO = {"name": "codex-workspace-backend-local", "version": "0.1.0"}
# protocol_probes.json "initialize_string_id": the sorted handler names, nothing else.
WORKSPACE_METHODS = [
    "flow.dispatch",
    "flow.getEvent",
    "flow.getRun",
    "flow.listEvents",
    "flow.listRuns",
    "flow.replay",
]
OWNED_PREFIXES = ("delegation.", "workbench.", "flow.")
RUN_STATUSES = ("queued", "running", "completed", "failed")
DATA_DIR = "/tmp/cf-standin/.data"
BUN = "/tmp/bunpkg/node_modules/bun/bin/bun.exe"
FLOW_RUNNER = "/tmp/codex-flows/apps/flow-runner/src/index.ts"


@dataclass(frozen=True)
class Step:
    """A step that matches events of one type, and how its run ends.

    ``result``: the step's FlowResult (the run ``completed``, the result in ``resultJson``);
    ``failure``: the runner's stderr when it exits 1 (the run ``failed``, no ``resultJson``).
    """

    flow: str
    step: str
    result: Mapping[str, Any] | None = None
    failure: str | None = None


@dataclass
class _Run:
    stages: list[dict[str, Any]]
    polls: int = 0

    @property
    def now(self) -> dict[str, Any]:
        return self.stages[min(self.polls, len(self.stages) - 1)]

    def ask(self) -> dict[str, Any]:
        """What ``flow.getRun`` sees: the current stage; the next ask sees the next one."""
        seen = self.now
        self.polls += 1
        return seen


class CodexFlowsError(Exception):
    """A handler failure: codex-flows answers it as -32603 with this message."""


@dataclass
class CodexFlowsStandIn:
    """The stand-in backend; ``steps`` maps an event type to the steps it runs.

    Use as a context manager; :attr:`url` is its ``ws://`` address, :attr:`calls` every
    request method received, in order.
    """

    steps: Mapping[str, Sequence[Step]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    url: str = ""
    _events: dict[str, dict[str, Any]] = field(default_factory=dict)
    _runs: dict[str, _Run] = field(default_factory=dict)
    _peers: set[ServerConnection] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: Server | None = None
    _thread: threading.Thread | None = None
    _nonce: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def __enter__(self) -> CodexFlowsStandIn:
        self._server = serve(self._serve, "127.0.0.1", 0)
        host, port = self._server.socket.getsockname()[:2]
        self.url = f"ws://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._thread.join(5)

    def run(self, run_id: str) -> dict[str, Any]:
        """A run as it is now (without moving it on)."""
        with self._lock:
            return self._runs[run_id].now

    # --- the connection ------------------------------------------------------------------

    def _serve(self, ws: ServerConnection) -> None:
        with self._lock:
            self._peers.add(ws)
        try:
            # protocol_probes.json "on_connect_before_any_request".
            ws.send(
                _notification("workspace.event", {"event": {"type": "connected", "at": _now()}})
            )
            for frame in ws:
                reply = self._answer(frame)
                if reply is not None:
                    ws.send(reply)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._peers.discard(ws)

    def _broadcast(self, frame: str) -> None:
        with self._lock:
            peers = list(self._peers)
        for peer in peers:
            with contextlib.suppress(ConnectionClosed):
                peer.send(frame)

    def _answer(self, frame: str | bytes) -> str | None:
        """The reply frame to one incoming frame (None for a notification)."""
        try:
            message = json.loads(frame)
        except ValueError:
            return _error(0, -32700, "Parse error")  # protocol_probes.json "bad_json"
        method = message.get("method") if isinstance(message, dict) else None
        # "batch_array", "id_without_method", "method_not_string": all id 0.
        if not isinstance(method, str) or "result" in message or "error" in message:
            return _error(0, -32600, "Invalid request")
        if "id" not in message:
            # "notification_owned_prefix_flow_dispatch": announced, never executed;
            # "notification_unknown_method": dropped.
            if method.startswith(OWNED_PREFIXES):
                self._unsupported(method)
            return None
        request_id = message["id"]
        params = message.get("params")
        params = params if isinstance(params, dict) else {}  # "getRun_params_array"
        with self._lock:
            self.calls.append(method)
        handler = _HANDLERS.get(method)
        if handler is None:
            if method.startswith(OWNED_PREFIXES):
                # "request_owned_prefix_unimplemented_delegation_list".
                self._unsupported(method)
                return _error(
                    request_id, -32601, f"Workspace backend method is not implemented: {method}"
                )
            # "request_unknown_method".
            return _error(request_id, -32601, f"Unknown workspace backend method: {method}")
        try:
            with self._lock:
                result = handler(self, params)
        except CodexFlowsError as exc:
            return _error(request_id, -32603, str(exc))
        return _compact({"jsonrpc": "2.0", "id": request_id, "result": result})

    def _unsupported(self, method: str) -> None:
        event = {"type": "unsupportedWorkspaceBackendMethod", "at": _now(), "method": method}
        self._broadcast(_notification("workspace.event", {"event": event}))

    # --- the methods (called under the lock) -----------------------------------------------

    def _initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        # protocol_probes.json "initialize_string_id", "initialize_without_jsonrpc_field...".
        return {
            "ok": True,
            "serverInfo": dict(SERVER_INFO),
            "capabilities": {
                "appServerPassThrough": True,
                "workspaceMethods": list(WORKSPACE_METHODS),
                "flowInspection": True,
            },
        }

    def _dispatch(self, params: dict[str, Any]) -> dict[str, Any]:
        # protocol_probes.json "dispatch_accepted", "dispatch_duplicate",
        # "dispatch_bare_event_params_no_match", "dispatch_invalid_event".
        event = params["event"] if params.get("event") is not None else params
        if not isinstance(event, dict) or not all(
            isinstance(event.get(key), str) for key in ("id", "type")
        ):
            raise CodexFlowsError("FlowEvent requires string id and type")
        event_id = event["id"]
        if event_id in self._events:
            existing = [run["id"] for run in self._runs_of(event_id)]
            return {"status": "duplicate", "eventId": event_id, "runIds": existing, "matched": 0}
        now = _now()
        raw = {"receivedAt": now, "payload": {}, **event}
        record: dict[str, Any] = {"id": event_id, "type": event["type"]}
        for key in ("source", "occurredAt"):
            if key in event:
                record[key] = event[key]
        record.update(receivedAt=raw["receivedAt"], payload=raw["payload"], raw=raw, createdAt=now)
        self._events[event_id] = record
        run_ids = self._start_runs(record, replay=False, finished=False)
        return {
            "status": "accepted",
            "eventId": event_id,
            "runIds": run_ids,
            "matched": len(run_ids),
        }

    def _replay(self, params: dict[str, Any]) -> dict[str, Any]:
        # protocol_probes.json "replay_wait", "replay_no_wait", "replay_unknown".
        record = self._event(params)
        run_ids = self._start_runs(record, replay=True, finished=bool(params.get("wait")))
        return {
            "status": "accepted",
            "eventId": record["id"],
            "runIds": run_ids,
            "matched": len(run_ids),
        }

    def _get_run(self, params: dict[str, Any]) -> dict[str, Any]:
        # reply_shapes.json "flowGetRunReply"; protocol_probes.json "getRun_unknown".
        run_id = params.get("runId")
        if not isinstance(run_id, str) or not run_id:
            raise CodexFlowsError("Missing required argument: runId")
        if run_id not in self._runs:
            raise CodexFlowsError(f"Unknown run: {run_id}")
        return {"run": self._runs[run_id].ask()}

    def _list_runs(self, params: dict[str, Any]) -> dict[str, Any]:
        # reply_shapes.json "flowListRunsReplyWithEventIdEcho"; "listRuns_bad_status".
        status = params.get("status")
        if status is not None and status not in RUN_STATUSES:
            raise CodexFlowsError("run status must be queued, running, completed, or failed")
        event_id = params.get("eventId")
        runs = [run.now for run in reversed(self._runs.values())]
        if event_id is not None:
            runs = [run for run in runs if run["eventId"] == event_id]
        if status is not None:
            runs = [run for run in runs if run["status"] == status]
        reply: dict[str, Any] = {} if event_id is None else {"eventId": event_id}
        reply["runs"] = runs[: _limit(params)]
        return reply

    def _list_events(self, params: dict[str, Any]) -> dict[str, Any]:
        # reply_shapes.json "flowListEventsReply".
        found = list(reversed(self._events.values()))
        if params.get("type") is not None:
            found = [event for event in found if event["type"] == params["type"]]
        return {"events": found[: _limit(params)]}

    def _get_event(self, params: dict[str, Any]) -> dict[str, Any]:
        # reply_shapes.json "flowGetEventReply"; protocol_probes.json "getEvent_unknown".
        record = self._event(params)
        return {"event": record, "runs": self._runs_of(record["id"])}

    # --- records ---------------------------------------------------------------------------

    def _event(self, params: dict[str, Any]) -> dict[str, Any]:
        event_id = params.get("eventId")
        if not isinstance(event_id, str) or not event_id:
            raise CodexFlowsError("Missing required argument: eventId")
        if event_id not in self._events:
            raise CodexFlowsError(f"Unknown event: {event_id}")
        return self._events[event_id]

    def _runs_of(self, event_id: str) -> list[dict[str, Any]]:
        """The event's runs, newest first."""
        return [run.now for run in reversed(self._runs.values()) if run.now["eventId"] == event_id]

    def _start_runs(self, event: dict[str, Any], *, replay: bool, finished: bool) -> list[str]:
        run_ids = []
        for step in self.steps.get(event["type"], ()):
            seed = f"{event['id']}\0{step.flow}\0{step.step}"
            if replay:
                seed += f"\0{next(self._nonce)}"
            run_id = "run_" + hashlib.sha256(seed.encode()).hexdigest()[:12]
            run_id += "_replay" if replay else ""
            run = _Run(_stages(run_id, event, step, replay))
            run.polls = len(run.stages) if finished else 0
            self._runs[run_id] = run
            run_ids.append(run_id)
        return run_ids


def _stages(run_id: str, event: dict[str, Any], step: Step, replay: bool) -> list[dict[str, Any]]:
    """The run record queued, running and ended, keys in codex-flows' order, optional ones
    omitted (reply_shapes.json "runRecordsByStep"; getRunRightAfterDispatch)."""
    created = _now()
    # One event file per dispatch: <safe id>-<12 hex>.json (a replay writes its own).
    tail = secrets.token_hex(6) if replay else hashlib.sha256(event["id"].encode()).hexdigest()[:12]
    event_path = f"{DATA_DIR}/events/{_safe(event['id'])}-{tail}.json"
    queued = {
        "id": run_id,
        "eventId": event["id"],
        "flowName": step.flow,
        "stepName": step.step,
        "status": "queued",
        "backend": "workspace-local",
        "executor": "direct",
        "eventPath": event_path,
        "createdAt": created,
    }
    args = [FLOW_RUNNER, "--cwd", "/tmp/cf-standin", "run", step.flow, step.step]
    args += ["--event", event_path, "--run-id", run_id, "--attempt-id", run_id]
    args += ["--workspace-backend-url", "ws://127.0.0.1:3586"] + (["--replay"] if replay else [])
    started = _now()
    running = _ordered(
        {**queued, "status": "running", "commandJson": _compact({"command": BUN, "args": args})},
        startedAt=started,
    )
    if step.failure is not None:
        ended = {
            **running,
            "status": "failed",
            "stdout": "",
            "stderr": step.failure + "\n",
            "error": "flow runner exited with 1",
        }
    else:
        output = {"flow": step.flow, "step": step.step, "result": dict(step.result or {})}
        ended = {
            **running,
            "status": "completed",
            "resultJson": _compact(output),
            "stdout": json.dumps(output, indent=2, ensure_ascii=False) + "\n",
            "stderr": "",
        }
    return [queued, running, _ordered(ended, startedAt=started, completedAt=_now())]


def _ordered(run: dict[str, Any], **times: str) -> dict[str, Any]:
    """``run`` with createdAt and ``times`` moved to the end, as codex-flows orders them."""
    body = {k: v for k, v in run.items() if k not in ("createdAt", "startedAt", "completedAt")}
    return {**body, "createdAt": run["createdAt"], **times}


def _limit(params: dict[str, Any]) -> int:
    """codex-flows' limit: a number (or numeric string) above 0, else 50; at most 500."""
    raw = params.get("limit")
    try:
        value = float(raw) if isinstance(raw, int | float | str) else 0.0
    except ValueError:
        value = 0.0
    return min(500, int(value)) if value > 0 else 50


def _safe(event_id: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", event_id.lower()).strip("-")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _compact(value: Any) -> str:
    """``JSON.stringify(value)``: no spaces, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _notification(method: str, params: Any) -> str:
    return _compact({"jsonrpc": "2.0", "method": method, "params": params})


def _error(request_id: Any, code: int, message: str) -> str:
    return _compact(
        {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    )


_HANDLERS = {
    "workspace.initialize": CodexFlowsStandIn._initialize,
    "flow.dispatch": CodexFlowsStandIn._dispatch,
    "flow.replay": CodexFlowsStandIn._replay,
    "flow.getRun": CodexFlowsStandIn._get_run,
    "flow.listRuns": CodexFlowsStandIn._list_runs,
    "flow.listEvents": CodexFlowsStandIn._list_events,
    "flow.getEvent": CodexFlowsStandIn._get_event,
}
