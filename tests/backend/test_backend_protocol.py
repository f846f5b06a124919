"""protocol.py with plain values: decoding, every error code, params, encoding, signatures."""

from __future__ import annotations

import json

import msgspec
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


def test_the_method_table_answers_unknown_methods() -> None:
    # decode_request leaves the method to the backend's table (test_backend_service.py).
    request = rpc.decode_request('{"jsonrpc":"2.0","id":"a","method":"flow.nope"}')
    assert request is not None and (request.id, request.method) == ("a", "flow.nope")


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
    ("params_type", "params", "field"),
    [
        (rpc.RunIdParams, {}, "runId"),
        (rpc.RunIdParams, {"runId": 5}, "runId"),
        (rpc.RunIdParams, {"runId": ""}, "runId"),
        (rpc.ListRunsParams, {"limit": 0}, "limit"),
        (rpc.ListRunsParams, {"status": "sleeping"}, "status"),
        (rpc.ReplayParams, {"eventId": "e", "wait": "soon"}, "wait"),
        (rpc.DispatchParams, {"event": 3}, "event"),
        (rpc.DispatchParams, {"event": {"id": "e"}, "wait": "soon"}, "wait"),
        (rpc.ListEventsParams, {"limit": 5000}, "limit"),
    ],
)
def test_bad_params_name_the_field(
    params_type: type[msgspec.Struct], params: dict[str, object], field: str
) -> None:
    with pytest.raises(rpc.RpcFault) as caught:
        rpc.parse_params(params_type, params)
    assert caught.value.code == rpc.INVALID_PARAMS
    assert caught.value.data == {"field": field}
    assert field in caught.value.message


def test_dispatch_takes_a_wrapped_or_a_bare_event() -> None:
    wrapped = rpc.parse_params(
        rpc.DispatchParams, {"event": {"id": "e", "type": "t"}, "wait": True}
    )
    bare = rpc.parse_params(rpc.DispatchParams, {"id": "e", "type": "t"})
    assert (wrapped.event["id"], wrapped.wait) == ("e", True)
    assert (bare.event, bare.wait) == ({"id": "e", "type": "t"}, False)


def test_query_strings_convert() -> None:
    params = rpc.parse_params(rpc.ListRunsParams, {"limit": "10", "status": "failed"})
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
    result = rpc.initialize_result(["workspace.initialize", "flow.dispatch"])
    assert result["ok"] is True
    assert set(result["serverInfo"]) == {"name", "version"}
    assert result["capabilities"]["flowInspection"] is True
    assert result["capabilities"]["runStreaming"] is True
    assert result["capabilities"]["workspaceMethods"] == ["flow.dispatch"]
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


# --- the client's side -------------------------------------------------------------------------


def test_requests_encode_params_structs_without_defaults() -> None:
    frame = rpc.encode_request(4, "flow.dispatch", rpc.DispatchParams(event={"id": "e"}))
    assert json.loads(frame) == {
        "jsonrpc": "2.0",
        "id": 4,
        "method": "flow.dispatch",
        "params": {"event": {"id": "e"}},
    }
    assert json.loads(rpc.encode_request(5, "flow.listRuns")) == {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "flow.listRuns",
    }


def test_a_request_round_trips_to_the_backend_side() -> None:
    frame = rpc.encode_request(9, "flow.getRun", rpc.RunIdParams(runId="run_1"))
    request = rpc.decode_request(frame)
    assert request is not None and request.params == {"runId": "run_1"}
    assert rpc.parse_params(rpc.RunIdParams, request.params).runId == "run_1"


def test_replies_decode_into_result_structs() -> None:
    run = rpc.WireRun(id="run_1", eventId="e", status="completed", resultStatus="changed")
    reply = rpc.decode_incoming(rpc.encode_result(3, rpc.RunResult(run)))
    assert isinstance(reply, rpc.Reply) and reply.id == 3 and reply.error is None
    assert rpc.decode_result(reply, rpc.RunResult).run == run
    assert rpc.decode_result(reply, dict)["run"]["resultStatus"] == "changed"


def test_a_null_result_is_a_reply() -> None:
    reply = rpc.decode_incoming('{"jsonrpc":"2.0","id":1,"result":null}')
    assert isinstance(reply, rpc.Reply) and rpc.decode_result(reply, object) is None


def test_error_replies_keep_code_and_message() -> None:
    fault = rpc.RpcFault(rpc.INVALID_PARAMS, "no such run", request_id=2, data={"field": "runId"})
    reply = rpc.decode_incoming(rpc.encode_fault(fault))
    assert isinstance(reply, rpc.Reply) and reply.error is not None
    assert (reply.error.code, reply.error.message, reply.error.data) == (
        rpc.INVALID_PARAMS,
        "no such run",
        {"field": "runId"},
    )


def test_notifications_decode_by_method() -> None:
    line = rpc.decode_incoming(
        rpc.encode_notification(rpc.RUN_OUTPUT, rpc.RunOutput("run_1", "stdout", "hi"))
    )
    assert isinstance(line, rpc.Notification) and line.method == rpc.RUN_OUTPUT
    assert rpc.decode_params(line, rpc.RunOutput) == rpc.RunOutput("run_1", "stdout", "hi")
    connected = rpc.decode_incoming(rpc.connected_notification("2026-01-01T00:00:00.000Z"))
    assert isinstance(connected, rpc.Notification) and connected.method == "workspace.event"


@pytest.mark.parametrize("frame", ["not json", "[]", '{"jsonrpc":"2.0"}', '{"id":1,"method":"x"}'])
def test_frames_a_client_cannot_use_are_none(frame: str) -> None:
    assert rpc.decode_incoming(frame) is None


def test_wire_run_flow_status() -> None:
    done = rpc.WireRun(id="r", status="completed", resultStatus="changed")
    assert (done.flow_status, done.terminal) == ("changed", True)
    assert rpc.WireRun(id="r", status="failed").flow_status == "failed"
    assert rpc.WireRun(id="r", status="canceled").flow_status == "canceled"
    assert not rpc.WireRun(id="r", status="running").terminal


def test_wire_run_reads_a_run_without_compatibility_keys() -> None:
    run = msgspec.json.decode(b'{"id":"r","status":"completed"}', type=rpc.WireRun)
    assert (run.id, run.stdout, run.resultJson) == ("r", "", None)
