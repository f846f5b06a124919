"""The appServer.* pass-through's frames and param checks, without a socket (backend/passthrough).

The end-to-end behaviour against a stand-in app-server is in tests/compat; these pin what each
function decides on its own, as codex-flows decides it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from workspace_adapter import protocol as rpc
from workspace_adapter.backend import passthrough


@pytest.mark.parametrize(
    ("params", "field"),
    [({}, "method"), ({"method": "  "}, "method"), ({"method": 5}, "method")],
)
def test_a_call_without_a_method_is_invalid_params_naming_it(
    params: dict[str, Any], field: str
) -> None:
    with pytest.raises(rpc.RpcFault) as caught:
        passthrough.parse_app_server_call("appServer.call", params)
    assert caught.value.code == rpc.INVALID_PARAMS
    assert caught.value.message.startswith("Invalid appServer.call params: method: ")
    assert caught.value.data == {"field": field}


def test_params_pass_on_only_when_given() -> None:
    with_params = passthrough.parse_app_server_call(
        "appServer.call", {"method": "thread/list", "params": None}
    )
    without = passthrough.parse_app_server_call("appServer.notify", {"method": "ping"})
    sent = json.loads(passthrough.app_server_request(7, with_params))
    assert sent == {"jsonrpc": "2.0", "id": 7, "method": "thread/list", "params": None}
    assert json.loads(passthrough.app_server_notification(without)) == {
        "jsonrpc": "2.0",
        "method": "ping",
    }


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("appServer.respond", {"result": 1}, "id"),
        ("appServer.respond", {"id": True, "result": 1}, "id"),
        ("appServer.respond", {"id": 1.5, "result": 1}, "id"),
        ("appServer.respond", {"id": 1}, "result"),
        ("appServer.respondError", {"id": "a", "message": "no"}, "code"),
        ("appServer.respondError", {"id": "a", "code": 1, "message": ""}, "message"),
    ],
)
def test_a_reply_missing_a_part_is_invalid_params_naming_it(
    method: str, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(rpc.RpcFault) as caught:
        passthrough.parse_app_server_reply(method, params)
    assert caught.value.code == rpc.INVALID_PARAMS
    assert caught.value.data == {"field": field}


def test_replies_are_framed_as_the_app_server_expects() -> None:
    result = passthrough.parse_app_server_reply("appServer.respond", {"id": 3.0, "result": None})
    assert result.id == 3 and isinstance(result.id, int)  # 3.0 from a JS client is id 3
    assert json.loads(passthrough.app_server_response(result)) == {
        "jsonrpc": "2.0",
        "id": 3,
        "result": None,
    }
    error = passthrough.parse_app_server_reply(
        "appServer.respondError", {"id": "r1", "code": -1, "message": "denied", "data": {"x": 1}}
    )
    assert json.loads(passthrough.app_server_response(error)) == {
        "jsonrpc": "2.0",
        "id": "r1",
        "error": {"code": -1, "message": "denied", "data": {"x": 1}},
    }


def test_the_handshake_names_this_backend() -> None:
    hello = json.loads(passthrough.app_server_initialize(1))
    assert hello["method"] == "initialize" and hello["id"] == 1
    assert hello["params"]["clientInfo"]["name"] == rpc.SERVER_NAME
    assert json.loads(passthrough.app_server_initialized()) == {
        "jsonrpc": "2.0",
        "method": "initialized",
    }


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ('{"jsonrpc":"2.0","id":1,"result":{}}', "reply"),
        ('{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}', "reply"),
        ('{"jsonrpc":"2.0","id":"s1","method":"item/approve","params":{}}', "request"),
        ('{"jsonrpc":"2.0","method":"turn/started","params":{}}', "notification"),
        ('{"jsonrpc":"2.0","id":1}', None),
        ("[1, 2]", None),
        ("not json", None),
        (b"\xff", None),
    ],
)
def test_frames_from_the_app_server_are_classified(frame: str | bytes, kind: str | None) -> None:
    message = passthrough.decode_app_server_message(frame)
    assert (message.kind if message is not None else None) == kind


def test_errors_from_the_app_server_name_it() -> None:
    fault = passthrough.app_server_error_fault({"code": -32000, "message": "thread not found"})
    assert fault.code == rpc.INTERNAL_ERROR
    assert fault.message == "app-server error: thread not found"
    assert fault.data is not None and fault.data["appServerCode"] == -32000
    down = passthrough.app_server_unreachable("ws://127.0.0.1:9", "connection refused")
    assert down.message.endswith("ws://127.0.0.1:9 (connection refused)")
    assert down.data == {"reason": "app_server_unreachable", "url": "ws://127.0.0.1:9"}
