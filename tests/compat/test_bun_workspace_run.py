"""frames_workspace_run.json: codex-flows' ``workspace run demo`` frames, replayed against our
backend serving the capture scenario's ``demo`` flow package (version = 1, ``[guidance]``, one
raw and one module-style bun step), end in runs recorded ``completed`` with the steps' output."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
from compat.conftest import fixture, needs_bun, scenario_workspace, sent_frames
from support.backend import running_backend
from support.wire import open_rpc
from websockets.asyncio.client import connect

from workspace_adapter.backend.store import BackendStore

RECORDED = fixture("frames_workspace_run.json")["scenarios"]["demo_task_two_steps"]


@needs_bun
async def test_recorded_workspace_run_completes_the_demo_flow(tmp_path: Path) -> None:
    # As recorded, guidance.skills holds a number too: dropped, as codex-flows drops it.
    root = scenario_workspace(tmp_path)
    frames = sent_frames(RECORDED)
    dispatch = json.loads(frames[1])
    event_id = dispatch["params"]["event"]["id"]
    data = tmp_path / "data"
    with running_backend(root, data) as backend:
        watcher = await open_rpc(backend.url)
        await watcher.call("flow.subscribe", {"eventId": event_id})
        # The codex-flows CLI: one connection, initialize (id 1), flow.dispatch (id 2), close.
        async with connect(backend.url, compression=None) as ws:
            replies = {}
            for frame in frames:
                await ws.send(frame)
                while json.loads(frame)["id"] not in replies:
                    message = json.loads(await ws.recv())
                    if "id" in message:
                        replies[message["id"]] = message
        assert replies[1]["result"]["capabilities"]["workspaceMethods"]
        accepted = replies[2]["result"]
        theirs = json.loads(RECORDED["frames"][5]["frame"])["result"]
        assert set(accepted) >= set(theirs) and accepted["status"] == "accepted"
        assert accepted["matched"] == theirs["matched"] == 2
        # The CLI never polls; we follow the runs on our own connection.
        finished: dict[str, dict[str, object]] = {}
        with anyio.fail_after(60):
            while len(finished) < 2:
                note = await watcher.note("flow.run.updated", timeout=60)
                run = note["params"]["run"]
                if run["status"] in ("completed", "failed", "canceled"):
                    finished[run["stepName"]] = run
        await watcher.ws.close()
    assert {k: r["status"] for k, r in finished.items()} == {
        "raw": "completed",
        "module": "completed",
    }, finished
    # Recorded in our store, with what each bun step said.
    store = BackendStore(data)
    try:
        runs = {r.step_name: r for r in store.runs_of_event(event_id)}
    finally:
        store.close()
    assert runs["raw"].status == "completed" and runs["module"].status == "completed"
    assert runs["raw"].result is not None and runs["raw"].result["message"] == "hello Ada"
    assert runs["module"].result is not None and runs["module"].result["status"] == "changed"
    assert runs["module"].result["message"] == "module Ada"
    result_json = json.loads(str(finished["raw"]["resultJson"]))
    assert result_json["result"]["status"] == "completed" and result_json["step"] == "raw"
