"""Acceptance 1: the harness flow through a real backend, fetch and push off."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from support.backend import Backend
from support.wire import open_rpc

FIXTURE = Path(__file__).resolve().parents[2] / "flows/patch-moi-harness/fixtures"


async def test_harness_release_through_the_backend(workspace_root: Path, tmp_path: Path) -> None:
    env = {"CODEX_FLOW_FETCH": "0", "CODEX_FLOW_PUSH": "0"}
    daemon = Backend(workspace_root, tmp_path / "data", env=env).start()
    try:
        rpc = await open_rpc(daemon.url)
        event = json.loads((FIXTURE / "upstream-release-v0.1.3.json").read_text())
        await rpc.call("flow.subscribe", {"eventId": event["id"]})
        reply = await rpc.call("flow.dispatch", {"event": event, "wait": True})
        assert reply["status"] == "accepted" and reply["matched"] == 1
        run_id = reply["runIds"][0]
        run = (await rpc.call("flow.getRun", {"runId": run_id}))["run"]
        assert run["status"] == "completed", (run["error"], run["stderrTail"][-2000:])
        assert run["resultStatus"] == "completed"
        refs = run["result"]["artifacts"]["candidateRefs"]
        assert refs and refs[0]["remote"] == "local" and refs[0]["pushed"] is False
        assert json.loads(run["resultJson"])["flow"] == "patch-moi-harness"
        await rpc.ws.close()
    finally:
        assert daemon.stop(signal.SIGTERM) == 0
