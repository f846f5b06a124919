"""protocol.py with plain values: decoding, every error code, params, encoding, signatures."""

from __future__ import annotations

import json

import pytest

from workspace_adapter import protocol as rpc


def fault_of(frame: str) -> rpc.RpcFault:
    with pytest.raises(rpc.RpcFault) as caught:
        rpc.decode_request(frame)
    return caught.value


def test_parse_error_has_null_id() -> None:
    fault = fault_of('{"jsonrpc":"2.0","id":1,')
    assert (fault.code, fault.request_id) == (rpc.PARSE_ERROR, None)


@pytest.mark.parametrize("frame", ["[]", '[{"jsonrpc":"2.0","id":1,"method":"x"}]', "3", '"s"'])
def test_arrays_and_non_objects_are_invalid_requests(frame: str) -> None:
    fault = fault_of(frame)
    assert (fault.code, fault.request_id) == (rpc.INVALID_REQUEST, None)


def test_unknown_method_keeps_the_id() -> None:
    fault = fault_of('{"jsonrpc":"2.0","id":"a","method":"flow.nope"}')
    assert (fault.code, fault.request_id) == (rpc.METHOD_NOT_FOUND, "a")


@pytest.mark.parametrize(
    "frame",
    [
        '{"jsonrpc":"2.0","id":1}',
        '{"jsonrpc":"1.0","id":1,"method":"flow.getRun"}',
        '{"jsonrpc":"2.0","id":{"x":1},"method":"flow.getRun"}',
        '{"jsonrpc":"2.0","id":true,"method":"flow.getRun"}',
    ],
)
def test_malformed_envelopes(frame: str) -> None:
    assert fault_of(frame).code == rpc.INVALID_REQUEST


def test_positional_params_are_bad_params() -> None:
    fault = fault_of('{"jsonrpc":"2.0","id":7,"method":"flow.getRun","params":[1]}')
    assert (fault.code, fault.request_id, fault.data) == (
        rpc.INVALID_PARAMS,
        7,
        {"field": "params"},
    )


def test_replies_from_the_client_are_ignored() -> None:
    assert rpc.decode_request('{"jsonrpc":"2.0","id":3,"result":{}}') is None


def test_notification_has_no_id() -> None:
    request = rpc.decode_request('{"jsonrpc":"2.0","method":"flow.listRuns"}')
    assert request is not None and request.notification and request.params == {}


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("flow.getRun", {}, "runId"),
        ("flow.getRun", {"runId": 5}, "runId"),
        ("flow.getRun", {"runId": ""}, "runId"),
        ("flow.listRuns", {"limit": 0}, "limit"),
        ("flow.listRuns", {"status": "sleeping"}, "status"),
        ("flow.replay", {"eventId": "e", "wait": "soon"}, "wait"),
        ("flow.dispatch", {"event": 3}, "event"),
        ("flow.listEvents", {"limit": 5000}, "limit"),
    ],
)
def test_bad_params_name_the_field(method: str, params: dict[str, object], field: str) -> None:
    with pytest.raises(rpc.RpcFault) as caught:
        rpc.parse_params(method, params)
    assert caught.value.code == rpc.INVALID_PARAMS
    assert caught.value.data == {"field": field}
    assert field in caught.value.message


def test_dispatch_takes_a_wrapped_or_a_bare_event() -> None:
    wrapped = rpc.parse_params("flow.dispatch", {"event": {"id": "e", "type": "t"}, "wait": True})
    bare = rpc.parse_params("flow.dispatch", {"id": "e", "type": "t"})
    assert (wrapped.event["id"], wrapped.wait) == ("e", True)
    assert (bare.event, bare.wait) == ({"id": "e", "type": "t"}, False)


def test_query_strings_convert() -> None:
    params = rpc.parse_params("flow.listRuns", {"limit": "10", "status": "failed"})
    assert (params.limit, params.status) == (10, "failed")


def test_encoding() -> None:
    assert json.loads(rpc.encode_result(1, {"a": 1})) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"a": 1},
    }
    fault = rpc.RpcFault(rpc.OVERLOADED, "busy", request_id="x", data={"retry": True})
    assert json.loads(rpc.encode_fault(fault)) == {
        "jsonrpc": "2.0",
        "id": "x",
        "error": {"code": -32001, "message": "busy", "data": {"retry": True}},
    }
    note = json.loads(rpc.connected_notification("2026-01-01T00:00:00.000Z"))
    assert note == {
        "jsonrpc": "2.0",
        "method": "workspace.event",
        "params": {"event": {"type": "connected", "at": "2026-01-01T00:00:00.000Z"}},
    }


def test_initialize_result_shape() -> None:
    result = rpc.initialize_result()
    assert result["ok"] is True
    assert set(result["serverInfo"]) == {"name", "version"}
    assert result["capabilities"]["flowInspection"] is True
    assert result["capabilities"]["runStreaming"] is True
    assert "flow.dispatch" in result["capabilities"]["workspaceMethods"]
    assert "protocolVersion" in result


def test_appendix_signature_example() -> None:
    body = b'{"id":"e1","type":"upstream.release","payload":{}}'
    header = "sha256=dac502f877133d6df2df1a5543c2686ea487c0d71878a57b9f2f67168a3e7249"
    assert rpc.sign_body("test-secret", body) == header
    assert rpc.verify_signature("test-secret", body, header)
    assert not rpc.verify_signature("test-secret", body + b" ", header)
    assert not rpc.verify_signature("other", body, header)
    assert not rpc.verify_signature("test-secret", body, None)


def test_bearer_tokens() -> None:
    assert rpc.verify_token("t0k", "Bearer t0k")
    assert not rpc.verify_token("t0k", "Bearer nope")
    assert not rpc.verify_token("t0k", "t0k")
    assert not rpc.verify_token("t0k", None)
    assert rpc.verify_token("t0k", "bearer t0k")  # the scheme is case-insensitive
    assert not rpc.verify_token("t0k", "Basic t0k")
    assert not rpc.verify_token("t0k", "Bearer")
