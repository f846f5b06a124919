"""JSON-RPC 2.0 of the workspace backend, both sides of it, without a socket in sight.

For the backend: decodes a frame into a :class:`Request` or an :class:`RpcFault`, validates
params into a typed struct, encodes replies and notifications, and verifies the HMAC signature
of ``POST /events``. For a client: encodes requests and decodes what the backend sends back
(:func:`decode_incoming`) into a :class:`Reply` or a :class:`Notification`. The run as both
sides see it is one struct, :class:`WireRun`. The server and client modules move bytes and call
these functions; the tests feed them plain values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import msgspec

from workspace_adapter import __version__
from workspace_adapter.base.status import RUN_STATES, TERMINAL_RUN_STATES, Status, flow_status

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
OVERLOADED = -32001

PROTOCOL_VERSION = "2026-01"
SERVER_NAME = "workspace-adapter-backend"
# How deep a client's JSON may nest: far past any real event, short of the interpreter's
# recursion limit wherever the value is encoded or walked again.
MAX_NESTING = 512
SIGNATURE_HEADERS = ("x-flow-signature-256", "x-patch-flow-signature-256")


RequestId = int | str | None
Limit = Annotated[int, msgspec.Meta(ge=1, le=1000)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
# Where a cut list reply goes on: the ``nextCursor`` it carried, passed back as it was.
Cursor = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,18}$")]


class RpcFault(Exception):
    """A JSON-RPC error reply waiting to be encoded; ``request_id`` is None when unknown."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        request_id: RequestId = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.data = data
        # True for a notification's fault: logged, never answered.
        self.silent = False


def bad_params(field: str, problem: str) -> RpcFault:
    """A -32602 that names the offending field in its message and in ``data.field``."""
    return RpcFault(INVALID_PARAMS, f"invalid params: {field}: {problem}", data={"field": field})


class Request(msgspec.Struct, frozen=True):
    """One decoded call; ``notification`` is True when the client sent no id."""

    id: RequestId
    method: str
    params: dict[str, Any]
    notification: bool = False


# --- the run, as both sides see it -----------------------------------------------------------


class WireRun(msgspec.Struct, kw_only=True):
    """One flow run on the wire: our keys (docs/api.md) plus codex-flows' compatibility keys.

    Every key is always sent (in this order); a reader takes a run that lacks the
    compatibility keys too.
    """

    id: str
    eventId: str = ""
    flowName: str = ""
    stepName: str = ""
    status: str = Status.QUEUED
    resultStatus: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    exitCode: int | None = None
    replay: bool = False
    stdoutTail: str = ""
    stderrTail: str = ""
    createdAt: str = ""
    startedAt: str | None = None
    completedAt: str | None = None
    resultJson: str | None = None
    backend: str = "workspace-adapter"
    executor: str = "local"
    eventPath: str | None = None
    commandJson: str | None = None
    stdout: str = ""
    stderr: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATES

    @property
    def flow_result(self) -> dict[str, Any] | None:
        """The step's FlowResult: ``result``, or the ``result`` inside ``resultJson``.

        codex-flows sends only ``resultJson``, a JSON string ``{"flow","step","result"}``.
        """
        if self.result is not None:
            return self.result
        return result_of_result_json(self.resultJson)

    @property
    def result_status(self) -> str | None:
        """The status the step reported: ``resultStatus``, else the one in ``resultJson``."""
        if self.resultStatus is not None:
            return self.resultStatus
        found = self.flow_result
        said = found.get("status") if found is not None else None
        return said if isinstance(said, str) else None

    @property
    def flow_status(self) -> Status:
        """Its result status when completed, else failed or canceled (or the state it is in)."""
        return flow_status(self.status, self.result_status)

    @property
    def message(self) -> str | None:
        """Why the run ended as it did: the backend's ``error`` first, else the step's message.

        A local task run's reason. A step that reported a result and then exited non-zero or
        timed out failed for that ``error``, whatever its message says; see
        :attr:`step_message` for the other precedence.
        """
        return str(self.error or self._result_message() or "") or None

    @property
    def step_message(self) -> str | None:
        """What the step said about its result first, else the backend's ``error``.

        A maintenance attempt's message, read by a person (and the notify hook): a step's own
        words (a conflict's files) say more than how its process ended.
        """
        text = self._result_message() or self.error
        return text if isinstance(text, str) and text else None

    def _result_message(self) -> Any:
        """The ``message`` of the step's FlowResult (any JSON value a backend sent), or None."""
        found = self.flow_result
        return found.get("message") if found is not None else None

    @property
    def artifacts(self) -> dict[str, Any]:
        found = self.flow_result
        artifacts = found.get("artifacts") if found is not None else None
        return artifacts if isinstance(artifacts, dict) else {}


def result_of_result_json(text: str | None) -> dict[str, Any] | None:
    """The ``result`` object of a codex-flows ``resultJson`` string; None when there is none."""
    if not text:
        return None
    try:
        decoded = _decoder.decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    found = decoded.get("result") if isinstance(decoded, dict) else None
    return found if isinstance(found, dict) else None


# --- params of each method -------------------------------------------------------------------


class InitializeParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    clientInfo: dict[str, Any] | None = None
    capabilities: dict[str, Any] | None = None


class DispatchParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    event: dict[str, Any]
    wait: bool = False


class ReplayParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    eventId: NonEmpty
    wait: bool = False


class ListEventsParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str | None = None
    limit: Limit = 50
    cursor: Cursor | None = None


class GetEventParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    eventId: NonEmpty


class ListRunsParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    eventId: str | None = None
    status: Status | None = None
    limit: Limit = 50
    cursor: Cursor | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in RUN_STATES:
            raise ValueError(f"status must be one of {', '.join(sorted(RUN_STATES))}")


class RunIdParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    runId: NonEmpty


class SubscribeParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    eventId: str | None = None
    runId: str | None = None


class UnsubscribeParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    subscriptionId: str | None = None
    eventId: str | None = None
    runId: str | None = None


# --- results ---------------------------------------------------------------------------------


class DispatchStatus(StrEnum):
    """What a ``flow.dispatch`` reply's ``status`` says of its event (a member *is* its string)."""

    ACCEPTED = "accepted"  # taken now: ``runIds`` are the runs it started (maybe none)
    DUPLICATE = "duplicate"  # taken before: ``runIds`` are the runs of its first dispatch


class DispatchResult(msgspec.Struct, kw_only=True):
    """The reply to ``flow.dispatch`` and ``flow.replay``; ``runs`` only when waited for.

    ``idempotent`` is always sent; a reply without it (codex-flows) reads as False.
    """

    status: str
    eventId: str
    runIds: list[str]
    matched: int
    idempotent: bool = False
    runs: list[WireRun] | msgspec.UnsetType = msgspec.UNSET


class RunResult(msgspec.Struct):
    """The reply to ``flow.getRun`` and ``flow.cancelRun``."""

    run: WireRun


class RunsResult(msgspec.Struct, kw_only=True):
    """The reply to ``flow.listRuns``; ``eventId`` echoes the filter when one was given, and
    ``nextCursor`` is there only when the reply was cut short (pass it back as ``cursor``)."""

    eventId: str | msgspec.UnsetType = msgspec.UNSET
    runs: list[WireRun]
    nextCursor: str | msgspec.UnsetType = msgspec.UNSET


class RunsPage(msgspec.Struct, kw_only=True):
    """:class:`RunsResult` as the backend writes it: each run already encoded."""

    eventId: str | msgspec.UnsetType = msgspec.UNSET
    runs: list[msgspec.Raw]
    nextCursor: str | msgspec.UnsetType = msgspec.UNSET


class EventResult(msgspec.Struct):
    """The reply to ``flow.getEvent``: the stored event and its runs."""

    event: dict[str, Any]
    runs: list[WireRun]


class EventsResult(msgspec.Struct):
    """The reply to ``flow.listEvents``; ``nextCursor`` as in :class:`RunsResult`."""

    events: list[dict[str, Any]]
    nextCursor: str | msgspec.UnsetType = msgspec.UNSET


class EventsPage(msgspec.Struct):
    """:class:`EventsResult` as the backend writes it: each event record already encoded."""

    events: list[msgspec.Raw]
    nextCursor: str | msgspec.UnsetType = msgspec.UNSET


class SubscribeResult(msgspec.Struct):
    subscriptionId: str


class UnsubscribeResult(msgspec.Struct):
    subscriptionId: str | None
    removed: list[str]


# --- notifications ---------------------------------------------------------------------------

RUN_UPDATED = "flow.run.updated"
RUN_OUTPUT = "flow.run.output"


class RunUpdated(msgspec.Struct):
    """``flow.run.updated``: a run changed state."""

    run: WireRun


class RunOutput(msgspec.Struct):
    """``flow.run.output``: one line a step printed."""

    runId: str
    stream: str
    line: str


_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")


class NestedTooDeep(msgspec.DecodeError):
    """JSON that nests deeper than :data:`MAX_NESTING` levels (valid JSON or not)."""

    def __init__(self) -> None:
        super().__init__(f"nested deeper than {MAX_NESTING} levels")


def decode_json(text: str | bytes) -> Any:
    """JSON from a client, decoded; :class:`msgspec.DecodeError` when it is not valid JSON, or
    :class:`NestedTooDeep` (one) when it nests deeper than :data:`MAX_NESTING`."""
    try:
        value = _decoder.decode(text)
    except RecursionError:  # msgspec's own guard, far deeper than ours
        raise NestedTooDeep from None
    # Counting brackets is cheap; only a text with enough of them can nest that deep.
    if _brackets(text) > MAX_NESTING and _nests_deeper(value, MAX_NESTING):
        raise NestedTooDeep
    return value


def _brackets(text: str | bytes) -> int:
    if isinstance(text, str):
        return text.count("[") + text.count("{")
    return text.count(b"[") + text.count(b"{")


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether ``value`` holds arrays or objects more than ``limit`` levels deep.

    Level by level, without recursion: as fast as a walk in Python gets (a 1 MB frame of small
    objects takes about as long as decoding it did).
    """
    level = [value] if type(value) is dict or type(value) is list else []
    for _ in range(limit):
        level = [
            child
            for item in level
            for child in (item.values() if type(item) is dict else item)
            if type(child) is dict or type(child) is list
        ]
        if not level:
            return False
    return True


def decode_request(frame: str | bytes) -> Request | None:
    """Decode one text frame; None for a reply the client sent us (ignored).

    Raises :class:`RpcFault` for parse errors, invalid requests and unknown methods, with the
    request's id when it could be read.
    """
    try:
        message = decode_json(frame)
    except NestedTooDeep as exc:
        raise RpcFault(PARSE_ERROR, f"parse error: the frame is {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise RpcFault(PARSE_ERROR, "parse error: the frame is not valid JSON") from None
    if not isinstance(message, dict):
        kind = "a batch (array)" if isinstance(message, list) else "not an object"
        raise RpcFault(INVALID_REQUEST, f"invalid request: the message is {kind}")
    raw_id = message.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, int | str | None):
        raise RpcFault(INVALID_REQUEST, "invalid request: id must be a string, number or null")
    request_id: RequestId = raw_id
    if "method" not in message and ("result" in message or "error" in message):
        return None
    method = message.get("method")
    notification = "id" not in message and isinstance(method, str) and bool(method)
    if message.get("jsonrpc", "2.0") != "2.0":
        fault = RpcFault(INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"')
    elif not isinstance(method, str) or not method:
        fault = RpcFault(INVALID_REQUEST, "invalid request: method must be a non-empty string")
    else:
        params = message.get("params", {})
        if params is None:
            params = {}
        if isinstance(params, dict):
            return Request(id=request_id, method=method, params=params, notification=notification)
        fault = bad_params("params", "must be an object")
    fault.request_id = raw_id
    fault.silent = notification
    raise fault


P = TypeVar("P", bound=msgspec.Struct)


def parse_params(params_type: type[P], params: dict[str, Any]) -> P:
    """``params`` as ``params_type``; raises a -32602 :class:`RpcFault` naming the field.

    :class:`DispatchParams` also takes a bare event (no ``event`` key), as codex-flows clients
    send.
    """
    if params_type is DispatchParams:
        if "event" not in params:
            params = {"event": params}
        # A dispatch is the hot path: a well-formed one skips the generic conversion.
        event, wait = params["event"], params.get("wait", False)
        if isinstance(event, dict) and isinstance(wait, bool):
            return DispatchParams(event=event, wait=wait)  # type: ignore[return-value]
    try:
        return msgspec.convert(params, params_type, strict=False)
    except msgspec.ValidationError as exc:
        raise _params_fault(str(exc)) from None


def _params_fault(error: str) -> RpcFault:
    found = _AT_PATH.search(error)
    path = found.group("path") if found else ""
    problem = _AT_PATH.sub("", error)
    missing = _MISSING.search(problem)
    if missing:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
    return bad_params(path or "params", problem)


# --- encoding --------------------------------------------------------------------------------


class _Result(msgspec.Struct):
    jsonrpc: str
    id: RequestId
    result: Any


def encode_result(request_id: RequestId, result: Any) -> bytes:
    return _encoder.encode(_Result("2.0", request_id, result))


def encode_fault(fault: RpcFault) -> bytes:
    error: dict[str, Any] = {"code": fault.code, "message": fault.message}
    if fault.data is not None:
        error["data"] = fault.data
    return _encoder.encode({"jsonrpc": "2.0", "id": fault.request_id, "error": error})


def encode_notification(method: str, params: Any) -> bytes:
    return _encoder.encode({"jsonrpc": "2.0", "method": method, "params": params})


def encode_json(value: Any) -> bytes:
    return _encoder.encode(value)


def connected_notification(at: str) -> bytes:
    """What every new connection hears first, as codex-flows sends it."""
    return workspace_event("connected", at)


def initialize_result(methods: Iterable[str], *, app_server: bool = False) -> dict[str, Any]:
    """The reply to ``workspace.initialize``, in codex-flows' keys plus ours.

    ``methods`` are the ones the backend serves (``workspaceMethods`` lists the ``flow.*`` ones,
    sorted, as codex-flows does); ``appServerPassThrough`` is True only when an app-server URL
    is configured, so a client knows whether ``appServer.*`` can work at all.
    """
    return {
        "ok": True,
        "serverInfo": {"name": SERVER_NAME, "version": __version__},
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {
            "appServerPassThrough": app_server,
            "workspaceMethods": sorted(m for m in methods if m.startswith("flow.")),
            "flowInspection": True,
            "runStreaming": True,
        },
    }


def workspace_event(event_type: str, at: str, **fields: Any) -> bytes:
    """A ``workspace.event`` notification, as codex-flows words its events."""
    return encode_notification(
        "workspace.event", {"event": {"type": event_type, "at": at, **fields}}
    )


# --- the client's side ------------------------------------------------------------------------


class _Call(msgspec.Struct, omit_defaults=True):
    jsonrpc: str
    id: RequestId
    method: str
    params: Any = None


def encode_request(request_id: RequestId, method: str, params: Any = None) -> bytes:
    """A request frame; ``params`` is a params struct, a dict, or None for none."""
    return _encoder.encode(_Call("2.0", request_id, method, params))


class ErrorBody(msgspec.Struct):
    """The ``error`` of a refused request."""

    code: int = 0
    message: str = ""
    data: Any = None


class Reply(msgspec.Struct):
    """The backend's answer to the request with ``id``: ``result``, or ``error`` when refused.

    ``result`` stays undecoded until the caller says what it expects (:func:`decode_result`).
    """

    id: RequestId
    result: msgspec.Raw
    error: ErrorBody | None


class Notification(msgspec.Struct):
    """Something the backend says unasked; ``params`` stays undecoded (:func:`decode_params`)."""

    method: str
    params: msgspec.Raw


_EMPTY = msgspec.Raw(b"")
_NO_PARAMS = msgspec.Raw(b"{}")


class _Incoming(msgspec.Struct):
    id: RequestId = None
    method: str | None = None
    params: msgspec.Raw = _EMPTY
    result: msgspec.Raw = _EMPTY
    error: ErrorBody | None = None


_incoming = msgspec.json.Decoder(_Incoming)


def decode_incoming(frame: str | bytes) -> Reply | Notification | None:
    """A frame the backend sent: a reply, a notification, or None for anything else."""
    try:
        message = _incoming.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if message.method is not None:
        if message.id is not None:
            return None  # a request to us: clients serve none
        return Notification(message.method, message.params if len(message.params) else _NO_PARAMS)
    if not len(message.result) and message.error is None:
        return None
    return Reply(message.id, message.result, message.error)


T = TypeVar("T")


def decode_result(reply: Reply, result_type: type[T]) -> T:
    """A reply's result as ``result_type``; raises :class:`msgspec.ValidationError`."""
    return msgspec.json.decode(reply.result if len(reply.result) else b"null", type=result_type)


def decode_params(note: Notification, params_type: type[T]) -> T:
    """A notification's params as ``params_type``; raises :class:`msgspec.ValidationError`."""
    return msgspec.json.decode(note.params, type=params_type)


# --- signatures ------------------------------------------------------------------------------
# hashlib and hmac load OpenSSL (about 4 ms): imported where a signature or a token is checked,
# not by every process that only speaks the protocol (the CLI's client, a step).


def sign_body(secret: str, body: bytes) -> str:
    """The header value for ``body``: ``sha256=<hex HMAC-SHA256(secret, body)>``."""
    import hashlib
    import hmac

    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when ``header`` signs exactly ``body``; compared in constant time."""
    if not header:
        return False
    import hmac

    return hmac.compare_digest(sign_body(secret, body).encode(), header.strip().encode())


def verify_token(expected: str, authorization: str | None) -> bool:
    """True when the ``Authorization`` header is ``Bearer <expected>``; constant time."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    # RFC 7235: the scheme is case-insensitive ("bearer" from some clients).
    if scheme.lower() != "bearer":
        return False
    import hmac

    return hmac.compare_digest(expected.encode(), credentials.strip().encode())
