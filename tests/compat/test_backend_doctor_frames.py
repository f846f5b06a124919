"""frames_workspace_doctor.json: the frames codex-flows' ``workspace doctor`` sends get replies
its doctor reads as "connected" (index.ts:683-701): initialize answered with
capabilities.workspaceMethods an array that advertises flow.listRuns and flow.listEvents, then
``{runs: […]}`` and ``{events: […]}``."""

from __future__ import annotations

import json
from pathlib import Path

from compat.conftest import THREADS, StandInAppServer, fixture, sent_frames
from support.backend import running_backend
from support.flows import write_flows
from websockets.asyncio.client import connect

RECORDED = fixture("frames_workspace_doctor.json")["scenarios"]["json_backend_up"]


async def replay(url: str, frames: list[str]) -> dict[int, dict[str, object]]:
    """Send the doctor's frames on one connection, as it does; the replies by id."""
    replies: dict[int, dict[str, object]] = {}
    async with connect(url, compression=None) as ws:
        for frame in frames:
            await ws.send(frame)
            while json.loads(frame)["id"] not in replies:
                message = json.loads(await ws.recv())
                if "id" in message:
                    replies[message["id"]] = message
    return replies


async def test_doctor_frames_read_as_connected(tmp_path: Path) -> None:
    frames = sent_frames(RECORDED)
    methods = [json.loads(f)["method"] for f in frames]
    assert methods == ["workspace.initialize", "appServer.call", "flow.listRuns", "flow.listEvents"]
    stand_in = await StandInAppServer().start()
    root = write_flows(tmp_path / "ws")
    try:
        with running_backend(root, tmp_path / "data", "--app-server-url", stand_in.url) as backend:
            await stand_in.initialized.wait()
            replies = await replay(backend.url, frames)
    finally:
        await stand_in.stop()
    init = replies[1]["result"]
    assert isinstance(init, dict) and init["ok"] is True
    assert set(init["serverInfo"]) >= {"name", "version"}
    capabilities = init["capabilities"]
    assert isinstance(capabilities["workspaceMethods"], list)  # else the doctor's probe throws
    assert {"flow.listRuns", "flow.listEvents"} <= set(capabilities["workspaceMethods"])
    assert capabilities["flowInspection"] is True and capabilities["appServerPassThrough"] is True
    assert replies[2]["result"] == THREADS  # the doctor's thread counts
    assert isinstance(replies[3]["result"], dict) and isinstance(replies[3]["result"]["runs"], list)
    events = replies[4]["result"]
    assert isinstance(events, dict) and isinstance(events["events"], list)


async def test_doctor_frames_without_an_app_server_still_read_as_connected(tmp_path: Path) -> None:
    root = write_flows(tmp_path / "ws")
    with running_backend(root, tmp_path / "data") as backend:
        replies = await replay(backend.url, sent_frames(RECORDED))
    # The doctor tolerates an appServer.call error; "connected" rests on initialize alone.
    assert isinstance(replies[1]["result"], dict)
    assert "error" in replies[2]
    assert "runs" in replies[3]["result"] and "events" in replies[4]["result"]  # type: ignore[operator]
