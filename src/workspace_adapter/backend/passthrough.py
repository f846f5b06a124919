"""The ``appServer.*`` pass-through's frames and param checks, sans I/O.

What a client's ``appServer.call`` / ``notify`` / ``respond`` / ``respondError`` carries, checked
as codex-flows checks it; the frames the backend sends a Codex app-server (``initialize``,
``initialized``, passed-on calls and answers); how a frame from the app-server is classified;
and the error replies for an app-server that answered with an error or cannot be reached.
:mod:`~workspace_adapter.backend.appserver` moves these frames over its connection.
"""

from __future__ import annotations

from typing import Any

import msgspec

from workspace_adapter import __version__
from workspace_adapter import protocol as rpc

_decoder = msgspec.json.Decoder()


APP_SERVER_CLIENT_INFO = {
    "name": rpc.SERVER_NAME,
    "title": "Workspace Adapter Backend",
    "version": __version__,
}


class AppServerCall(msgspec.Struct, frozen=True):
    """``appServer.call`` or ``appServer.notify``: a method of the app-server and its params."""

    method: str
    params: Any = None
    has_params: bool = False


class AppServerReply(msgspec.Struct, frozen=True):
    """``appServer.respond`` / ``appServer.respondError``: a client's answer to an app-server
    request; ``error`` is None for a result."""

    id: int | str
    result: Any = None
    error: dict[str, Any] | None = None


def _app_server_fault(method: str, field: str, problem: str) -> rpc.RpcFault:
    # codex-flows' message first ("Invalid appServer.call params"), then which field and why.
    return rpc.RpcFault(
        rpc.INVALID_PARAMS, f"Invalid {method} params: {field}: {problem}", data={"field": field}
    )


def parse_app_server_call(method: str, params: dict[str, Any]) -> AppServerCall:
    """The params of ``appServer.call`` / ``appServer.notify``, checked as codex-flows does."""
    target = params.get("method")
    if not isinstance(target, str) or not target.strip():
        raise _app_server_fault(method, "method", "must be a non-empty string")
    return AppServerCall(target, params.get("params"), "params" in params)


def parse_app_server_reply(method: str, params: dict[str, Any]) -> AppServerReply:
    """The params of ``appServer.respond`` / ``appServer.respondError``, checked as codex-flows
    does: an ``id`` that is a string or number, then ``result``, or ``code`` and ``message``."""
    request_id = params.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | float | str):
        raise _app_server_fault(method, "id", "must be a string or number")
    if isinstance(request_id, float):
        if not request_id.is_integer():
            raise _app_server_fault(method, "id", "must be a string or integer")
        request_id = int(request_id)
    if method == "appServer.respond":
        if "result" not in params:
            raise _app_server_fault(method, "result", "is required")
        return AppServerReply(request_id, result=params["result"])
    code = params.get("code")
    if isinstance(code, bool) or not isinstance(code, int | float):
        raise _app_server_fault(method, "code", "must be a number")
    message = params.get("message")
    if not isinstance(message, str) or not message:
        raise _app_server_fault(method, "message", "must be a non-empty string")
    error: dict[str, Any] = {"code": code, "message": message}
    if params.get("data") is not None:
        error["data"] = params["data"]
    return AppServerReply(request_id, error=error)


def app_server_initialize(request_id: int) -> bytes:
    """The ``initialize`` request a backend sends first on every app-server connection."""
    return rpc.encode_request(
        request_id,
        "initialize",
        {"clientInfo": APP_SERVER_CLIENT_INFO, "capabilities": {"experimentalApi": True}},
    )


def app_server_initialized() -> bytes:
    """The ``initialized`` notification that follows the answer to ``initialize``."""
    return rpc.encode_json({"jsonrpc": "2.0", "method": "initialized"})


def app_server_notification(call: AppServerCall) -> bytes:
    frame: dict[str, Any] = {"jsonrpc": "2.0", "method": call.method}
    if call.has_params:
        frame["params"] = call.params
    return rpc.encode_json(frame)


def app_server_request(request_id: int, call: AppServerCall) -> bytes:
    frame: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": call.method}
    if call.has_params:
        frame["params"] = call.params
    return rpc.encode_json(frame)


def app_server_response(reply: AppServerReply) -> bytes:
    if reply.error is None:
        return rpc.encode_json({"jsonrpc": "2.0", "id": reply.id, "result": reply.result})
    return rpc.encode_json({"jsonrpc": "2.0", "id": reply.id, "error": reply.error})


class AppServerMessage(msgspec.Struct, frozen=True):
    """One frame the app-server sent: ``kind`` is ``reply``, ``request`` or ``notification``;
    ``message`` is the frame as received, passed on verbatim."""

    kind: str
    message: dict[str, Any]

    @property
    def id(self) -> Any:
        return self.message.get("id")


def decode_app_server_message(frame: str | bytes) -> AppServerMessage | None:
    """Classify a frame from the app-server; None for anything that is no JSON-RPC message."""
    try:
        message = _decoder.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    if isinstance(message.get("method"), str):
        kind = "request" if "id" in message else "notification"
        return AppServerMessage(kind, message)
    if "id" in message and ("result" in message or "error" in message):
        return AppServerMessage("reply", message)
    return None


def app_server_error_fault(error: Any) -> rpc.RpcFault:
    """Our error reply for an error the app-server answered a call with, naming it."""
    body = error if isinstance(error, dict) else {"message": str(error)}
    code, message = body.get("code"), body.get("message") or "app-server error"
    return rpc.RpcFault(
        rpc.INTERNAL_ERROR,
        f"app-server error: {message}",
        data={"reason": "app_server_error", "appServerError": body, "appServerCode": code},
    )


def app_server_unreachable(url: str, why: str) -> rpc.RpcFault:
    """The error reply for a pass-through call while the app-server is not connected."""
    return rpc.RpcFault(
        rpc.INTERNAL_ERROR,
        f"app-server unreachable: codex app-server websocket error: {url} ({why})",
        data={"reason": "app_server_unreachable", "url": url},
    )
