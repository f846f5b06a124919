"""JSON-RPC 2.0 of the workspace backend (SPEC §6), without a socket in sight.

Decodes a frame into a :class:`Request` or an :class:`RpcFault`, validates each method's params
into a typed struct, encodes replies and notifications, and verifies the HMAC signature of
``POST /events``. The server module moves bytes and calls these functions; the tests feed them
plain values.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Annotated, Any

import msgspec

from workspace_adapter import __version__
from workspace_adapter.base.status import RUN_STATES, Status

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
OVERLOADED = -32001

PROTOCOL_VERSION = "2026-01"
SERVER_NAME = "workspace-adapter-backend"
MAX_FRAME_BYTES = 1024 * 1024
SIGNATURE_HEADERS = ("x-flow-signature-256", "x-patch-flow-signature-256")


RequestId = int | str | None
Limit = Annotated[int, msgspec.Meta(ge=1, le=1000)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


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


def bad_params(field: str, problem: str) -> RpcFault:
    """A -32602 that names the offending field in its message and in ``data.field``."""
    return RpcFault(INVALID_PARAMS, f"invalid params: {field}: {problem}", data={"field": field})


class Request(msgspec.Struct, frozen=True):
    """One decoded call; ``notification`` is True when the client sent no id."""

    id: RequestId
    method: str
    params: dict[str, Any]
    notification: bool = False


# --- params of each method -------------------------------------------------------------------


class InitializeParams(msgspec.Struct, kw_only=True):
    clientInfo: dict[str, Any] | None = None
    capabilities: dict[str, Any] | None = None


class DispatchParams(msgspec.Struct, kw_only=True):
    event: dict[str, Any]
    wait: bool = False


class ReplayParams(msgspec.Struct, kw_only=True):
    eventId: NonEmpty
    wait: bool = False


class ListEventsParams(msgspec.Struct, kw_only=True):
    type: str | None = None
    limit: Limit = 50


class GetEventParams(msgspec.Struct, kw_only=True):
    eventId: NonEmpty


class ListRunsParams(msgspec.Struct, kw_only=True):
    eventId: str | None = None
    status: Status | None = None
    limit: Limit = 50

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in RUN_STATES:
            raise ValueError(f"status must be one of {', '.join(sorted(RUN_STATES))}")


class RunIdParams(msgspec.Struct, kw_only=True):
    runId: NonEmpty


class SubscribeParams(msgspec.Struct, kw_only=True):
    eventId: str | None = None
    runId: str | None = None


class UnsubscribeParams(msgspec.Struct, kw_only=True):
    subscriptionId: str | None = None
    eventId: str | None = None
    runId: str | None = None


PARAMS: dict[str, type[msgspec.Struct]] = {
    "workspace.initialize": InitializeParams,
    "flow.dispatch": DispatchParams,
    "flow.replay": ReplayParams,
    "flow.listEvents": ListEventsParams,
    "flow.getEvent": GetEventParams,
    "flow.listRuns": ListRunsParams,
    "flow.getRun": RunIdParams,
    "flow.cancelRun": RunIdParams,
    "flow.subscribe": SubscribeParams,
    "flow.unsubscribe": UnsubscribeParams,
}
WORKSPACE_METHODS: tuple[str, ...] = tuple(sorted(m for m in PARAMS if m.startswith("flow.")))

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")


def decode_request(frame: str | bytes) -> Request | None:
    """Decode one text frame; None for a reply the client sent us (ignored).

    Raises :class:`RpcFault` for parse errors, invalid requests and unknown methods, with the
    request's id when it could be read.
    """
    try:
        message = _decoder.decode(frame)
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
    if message.get("jsonrpc", "2.0") != "2.0":
        raise RpcFault(INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"', request_id=raw_id)
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise RpcFault(
            INVALID_REQUEST, "invalid request: method must be a non-empty string", request_id=raw_id
        )
    if method not in PARAMS:
        raise RpcFault(METHOD_NOT_FOUND, f"method not found: {method}", request_id=raw_id)
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        fault = bad_params("params", "must be an object")
        fault.request_id = raw_id
        raise fault
    return Request(id=request_id, method=method, params=params, notification="id" not in message)


def parse_params(method: str, params: dict[str, Any]) -> Any:
    """The typed params of ``method``; raises a -32602 :class:`RpcFault` naming the field.

    ``flow.dispatch`` also takes a bare event (no ``event`` key), as codex-flows clients send.
    """
    if method == "flow.dispatch" and "event" not in params:
        params = {"event": params}
    try:
        return msgspec.convert(params, PARAMS[method], strict=False)
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


def encode_result(request_id: RequestId, result: Any) -> bytes:
    return _encoder.encode({"jsonrpc": "2.0", "id": request_id, "result": result})


def encode_fault(fault: RpcFault) -> bytes:
    error: dict[str, Any] = {"code": fault.code, "message": fault.message}
    if fault.data is not None:
        error["data"] = fault.data
    return _encoder.encode({"jsonrpc": "2.0", "id": fault.request_id, "error": error})


def encode_notification(method: str, params: dict[str, Any]) -> bytes:
    return _encoder.encode({"jsonrpc": "2.0", "method": method, "params": params})


def encode_json(value: Any) -> bytes:
    return _encoder.encode(value)


def connected_notification(at: str) -> bytes:
    """What every new connection hears first, as codex-flows sends it."""
    return encode_notification("workspace.event", {"event": {"type": "connected", "at": at}})


def initialize_result() -> dict[str, Any]:
    return {
        "ok": True,
        "serverInfo": {"name": SERVER_NAME, "version": __version__},
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {
            "workspaceMethods": list(WORKSPACE_METHODS),
            "flowInspection": True,
            "runStreaming": True,
        },
    }


# --- signatures ------------------------------------------------------------------------------


def sign_body(secret: str, body: bytes) -> str:
    """The header value for ``body``: ``sha256=<hex HMAC-SHA256(secret, body)>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when ``header`` signs exactly ``body``; compared in constant time."""
    if not header:
        return False
    return hmac.compare_digest(sign_body(secret, body).encode(), header.strip().encode())


def verify_token(expected: str, authorization: str | None) -> bool:
    """True when the ``Authorization`` header is ``Bearer <expected>``; constant time."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    # RFC 7235: the scheme is case-insensitive ("bearer" from some clients).
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(expected.encode(), credentials.strip().encode())
