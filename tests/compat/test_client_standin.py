"""The codex-flows stand-in answers as the recorded backend does, and our WireRun reads it.

The probes in ``fixtures/protocol_probes.json`` are sent again, frame for frame, to the
stand-in (``support.codex_flows``); what comes back must match the recording byte for byte,
except for timestamps, event file paths and the command line of a run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support.codex_flows import CodexFlowsStandIn, Step
from websockets.sync.client import ClientConnection, connect

from workspace_adapter.protocol import RunResult, WireRun

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PROBES: dict[str, Any] = json.loads((FIXTURES / "protocol_probes.json").read_text())["probes"]
SHAPES: dict[str, Any] = json.loads((FIXTURES / "reply_shapes.json").read_text())
RECORDS: dict[str, dict[str, Any]] = SHAPES["runRecordsByStep"]
ISO = re.compile(r'"at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"')

# In recording order: later probes depend on the events earlier ones stored.
EXACT = [
    "initialize_string_id",
    "initialize_without_jsonrpc_field_no_params",
    "bad_json",
    "batch_array",
    "id_without_method",
    "method_not_string",
    "null_id_request",
    "request_unknown_method",
    "request_owned_prefix_unimplemented_delegation_list",
    "request_owned_prefix_unimplemented_workbench",
    "getRun_missing_runId",
    "getRun_params_array",
    "getRun_unknown",
    "getEvent_unknown",
    "getEvent_missing",
    "listRuns_bad_status",
    "dispatch_invalid_event",
    "dispatch_no_params",
    "dispatch_accepted",
    "dispatch_duplicate",
    "dispatch_bare_event_params_no_match",
    "listRuns_unknown_eventId",
    "replay_unknown",
    "replay_missing",
]


def result_of(record: dict[str, Any]) -> dict[str, Any]:
    found = json.loads(record["resultJson"])["result"]
    assert isinstance(found, dict)
    return found


# The scenario's flow "demo", as recorded (getRun_completed_raw_step / _module_step).
DEMO_RAW = json.loads(
    json.loads(PROBES["getRun_completed_raw_step"]["received"][0])["result"]["run"]["resultJson"]
)
DEMO_STEPS = {
    "demo.run": [
        Step("demo", "raw", DEMO_RAW["result"]),
        Step("demo", "module", result_of(RECORDS["demo/module"])),
    ]
}


def timeless(frame: str) -> str:
    return ISO.sub('"at":"<at>"', frame)


@pytest.fixture
def standin() -> Iterator[CodexFlowsStandIn]:
    with CodexFlowsStandIn(DEMO_STEPS) as backend:
        yield backend


@pytest.fixture
def peer(standin: CodexFlowsStandIn) -> Iterator[ClientConnection]:
    with connect(standin.url) as ws:
        yield ws


def exchange(ws: ClientConnection, sent: str, count: int) -> list[str]:
    ws.send(sent)
    return [str(ws.recv(timeout=10)) for _ in range(count)]


def test_a_new_connection_hears_connected_first(peer: ClientConnection) -> None:
    [recorded] = PROBES["on_connect_before_any_request"]["received"]
    assert timeless(str(peer.recv(timeout=10))) == timeless(recorded)


def test_the_recorded_probes_get_the_recorded_frames(peer: ClientConnection) -> None:
    peer.recv(timeout=10)  # connected
    for name in EXACT:
        probe = PROBES[name]
        received = exchange(peer, probe["sent"], len(probe["received"]))
        assert [timeless(f) for f in received] == [timeless(f) for f in probe["received"]], name


def test_a_run_goes_queued_running_completed_in_the_recorded_shape(
    peer: ClientConnection,
) -> None:
    peer.recv(timeout=10)
    exchange(peer, PROBES["dispatch_accepted"]["sent"], 1)
    recorded = json.loads(PROBES["getRun_completed_raw_step"]["received"][0])["result"]["run"]
    ask = json.dumps({"jsonrpc": "2.0", "id": 26, "method": "flow.getRun",
                      "params": {"runId": recorded["id"]}})  # fmt: skip
    seen = [json.loads(exchange(peer, ask, 1)[0])["result"]["run"] for _ in range(4)]
    assert [run["status"] for run in seen] == ["queued", "running", "completed", "completed"]
    assert list(seen[0]) == [
        "id", "eventId", "flowName", "stepName", "status", "backend", "executor", "eventPath",
        "createdAt",
    ]  # fmt: skip
    assert list(seen[1]) == [*list(seen[0])[:-1], "commandJson", "createdAt", "startedAt"]
    done = seen[-1]
    assert list(done) == list(recorded)
    volatile = ("eventPath", "commandJson", "createdAt", "startedAt", "completedAt")
    assert {k: v for k, v in done.items() if k not in volatile} == {
        k: v for k, v in recorded.items() if k not in volatile
    }
    command = json.loads(done["commandJson"])
    assert command["args"][3:6] == ["run", "demo", "raw"]


def test_a_failed_runner_leaves_the_recorded_keys() -> None:
    failing = {"errors.run": [Step("errors", "raw-exit-1", failure="raw fail stderr")]}
    with CodexFlowsStandIn(failing) as backend, connect(backend.url) as ws:
        ws.recv(timeout=10)
        ask = {"jsonrpc": "2.0", "id": 1, "method": "flow.replay"}
        exchange(ws, json.dumps({**ask, "method": "flow.dispatch",
                                 "params": {"id": "e", "type": "errors.run"}}), 1)  # fmt: skip
        reply = json.loads(
            exchange(ws, json.dumps({**ask, "params": {"eventId": "e", "wait": True}}), 1)[0]
        )
        [run_id] = reply["result"]["runIds"]
        assert run_id.endswith("_replay")
        got = exchange(
            ws, json.dumps({**ask, "method": "flow.getRun", "params": {"runId": run_id}}), 1
        )
        run = json.loads(got[0])["result"]["run"]
    assert list(run) == list(RECORDS["errors/raw-exit-1"])
    assert (run["status"], run["error"], run["stdout"]) == (
        "failed",
        "flow runner exited with 1",
        "",
    )


@pytest.mark.parametrize(
    ("step", "flow_status"),
    [
        ("demo/raw", "completed"),
        ("demo/module", "changed"),
        ("errors/module-throws", "failed"),
        ("errors/module-no-status", "failed"),
        ("errors/raw-exit-1", "failed"),
        ("errors/code-mode-refused", "failed"),
    ],
)
def test_wire_run_reads_the_flow_status_of_a_recorded_run(step: str, flow_status: str) -> None:
    run = msgspec.convert(RECORDS[step], WireRun)
    assert run.flow_status == flow_status
    if "resultJson" in RECORDS[step]:
        said = result_of(RECORDS[step])
        assert (run.result_status, run.message) == (said["status"], said["message"])
    else:
        assert run.result_status is None and run.message == "flow runner exited with 1"


def test_wire_run_reads_a_recorded_get_run_reply() -> None:
    got = msgspec.json.decode(json.dumps(SHAPES["flowGetRunReply"]).encode(), type=RunResult).run
    assert (got.status, got.flow_status, got.message) == ("completed", "completed", "hello Grace")
    assert got.artifacts["runtime"]["launchedBy"] == "codex-workspace-backend-local"
    queued = WireRun(id="run_x", status="queued", resultJson=None)
    assert (queued.terminal, queued.result_status) == (False, None)
    broken = WireRun(id="run_y", status="completed", resultJson="{not json")
    assert broken.flow_status == "completed"  # a completed run with no readable result
