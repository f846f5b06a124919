"""codex-flows compatibility: SPEC appendix A's literal frames get replies of the same shape."""

from __future__ import annotations

import json

from support.backend import Backend
from support.wire import http
from websockets.asyncio.client import connect

from workspace_adapter.protocol import verify_signature

INITIALIZE = (
    '{"jsonrpc":"2.0","id":1,"method":"workspace.initialize","params":{"clientInfo":{"name":'
    '"codex-flows-cli","title":"Codex Flows CLI","version":"0.1.0"},"capabilities":'
    '{"appServerPassThrough":true}}}'
)
DISPATCH = (
    '{"jsonrpc":"2.0","id":2,"method":"flow.dispatch","params":{"event":{"payload":{"taskId":'
    '"trivial-flow","note":"from codex-flows cli"},"id":"workspace:peerws:trivial-flow:'
    '2026-11-24T23-07-55-864Z-1ba8de9a-trivial-flow","type":"load.trivial","source":"peerws",'
    '"occurredAt":"2026-11-24T23:07:55.864Z","receivedAt":"2026-11-24T23:07:55.864Z"}}}'
)
CONNECTED = (
    '{"jsonrpc":"2.0","method":"workspace.event","params":{"event":{"type":"connected",'
    '"at":"2026-11-24T23:07:55.868Z"}}}'
)
INITIALIZED = (
    '{"jsonrpc":"2.0","id":1,"result":{"ok":true,"serverInfo":{"name":'
    '"codex-workspace-backend-local","version":"0.1.0"},"capabilities":{"appServerPassThrough":'
    'true,"workspaceMethods":["flow.dispatch","flow.getEvent","flow.getRun","flow.listEvents",'
    '"flow.listRuns","flow.replay"],"flowInspection":true}}}'
)
DISPATCHED = (
    '{"jsonrpc":"2.0","id":2,"result":{"status":"accepted","eventId":"workspace:peerws:'
    'trivial-flow:2026-11-24T23-07-55-864Z-1ba8de9a-trivial-flow","runIds":["run_a9b7ce48f67a"],'
    '"matched":1}}'
)
RUN_KEYS = (
    "id",
    "eventId",
    "flowName",
    "stepName",
    "status",
    "backend",
    "executor",
    "eventPath",
    "commandJson",
    "resultJson",
    "stdout",
    "stderr",
    "createdAt",
    "startedAt",
    "completedAt",
)


def same_shape(ours: object, theirs: object) -> None:
    """Every key of ``theirs`` is in ``ours`` with a value of the same JSON type (recursively)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), (ours, theirs)
        for key, value in theirs.items():
            if key == "appServerPassThrough":
                continue  # a codex app-server capability this backend does not have
            assert key in ours, (key, ours)
            same_shape(ours[key], value)
    elif isinstance(theirs, list):
        assert isinstance(ours, list)
        for a, b in zip(ours, theirs, strict=False):
            same_shape(a, b)
    else:
        assert type(ours) is type(theirs), (ours, theirs)


async def test_appendix_frames(backend: Backend) -> None:
    # The daemon serves support.flows' "trivial" flow, the one of the appendix's session.
    async with connect(backend.url, compression=None) as ws:
        await ws.send(INITIALIZE)
        first = json.loads(await ws.recv())
        same_shape(first, json.loads(CONNECTED))
        assert first["params"]["event"]["at"].endswith("Z")
        same_shape(json.loads(await ws.recv()), json.loads(INITIALIZED))
        await ws.send(DISPATCH)
        reply = json.loads(await ws.recv())
        same_shape(reply, json.loads(DISPATCHED))
        assert reply["result"]["matched"] == 1
        run_id = reply["result"]["runIds"][0]
        assert run_id.startswith("run_") and len(run_id) == len("run_a9b7ce48f67a")
    status, body = http("GET", f"{backend.http}/runs/{run_id}")
    assert status == 200 and set(body) == {"run"}  # {"run": …}, as codex-flows answers
    assert set(RUN_KEYS) <= set(body["run"])


def test_appendix_signature_verifies() -> None:
    body = b'{"id":"e1","type":"upstream.release","payload":{}}'
    header = "sha256=dac502f877133d6df2df1a5543c2686ea487c0d71878a57b9f2f67168a3e7249"
    assert verify_signature("test-secret", body, header)
