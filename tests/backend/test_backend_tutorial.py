"""The tutorial through a real backend: `workspace run harness-flow`; two harness runs at once."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import anyio
from support.backend import WORKSPACE, Backend
from support.wire import Rpc, open_rpc

REPO_ROOT = Path(__file__).resolve().parents[2]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


async def test_run_harness_flow_streams_the_step_and_ends_completed(
    workspace_root: Path, tmp_path: Path
) -> None:
    shutil.copy(REPO_ROOT / "workspace.toml", workspace_root / "workspace.toml")
    daemon = Backend(workspace_root, tmp_path / "data").start()
    try:
        env = {**os.environ, "CODEX_FLOW_FETCH": "0", "CODEX_FLOW_PUSH": "0"}
        done = await asyncio.to_thread(
            subprocess.run,
            [str(WORKSPACE), "--backend-url", daemon.url, "run", "harness-flow"],
            cwd=workspace_root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        # The step's lines were streamed: one per phase (no git commands unless verbose), then
        # the summary in words.
        assert "\ncheck    npm test: passed (" in done.stdout
        assert "$ git status --porcelain" not in done.stdout
        assert "FLOW_RESULT" not in done.stdout
        assert "patch-moi-harness/maintain: completed" in done.stdout
        assert "ref     local refs/heads/main" in done.stdout

        runs = await asyncio.to_thread(
            subprocess.run,
            [str(WORKSPACE), "runs", "harness-flow", "--json"],
            cwd=workspace_root,
            capture_output=True,
            text=True,
            check=True,
        )
        record = json.loads(runs.stdout)["runs"][0]
        assert record["status"] == "completed" and len(record["runIds"]) == 1

        async def backend_view() -> dict[str, object]:
            rpc = await open_rpc(daemon.url)
            try:
                reply = await rpc.call("flow.getRun", {"runId": record["runIds"][0]})
                run: dict[str, object] = reply["run"]
                return run
            finally:
                await rpc.ws.close()

        run = await backend_view()
        assert run["resultStatus"] == "completed"
        result = run["result"]
        assert isinstance(result, dict)
        refs = result["artifacts"]["candidateRefs"]
        assert refs[0]["sha"] == git(workspace_root / "harness/fork", "rev-parse", "HEAD")
    finally:
        assert daemon.stop(signal.SIGTERM) == 0


async def test_two_harness_dispatches_are_serialized(workspace_root: Path, tmp_path: Path) -> None:
    fork = workspace_root / "harness/fork"
    head = git(fork, "rev-parse", "HEAD")
    env = {"CODEX_FLOW_FETCH": "0", "CODEX_FLOW_PUSH": "0"}
    daemon = Backend(workspace_root, tmp_path / "data", "--concurrency", "4", env=env).start()
    try:
        rpc_a, rpc_b = await open_rpc(daemon.url), await open_rpc(daemon.url)
        payload = {"repo": "peezy-tech/patch-moi-harness", "tag": "v0.1.3"}
        replies: list[dict[str, Any]] = []

        async def dispatch(rpc: Rpc, event_id: str) -> None:
            event = {"id": event_id, "type": "upstream.release", "payload": payload}
            replies.append(await rpc.call("flow.dispatch", {"event": event, "wait": True}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatch, rpc_a, "serial-a")
            tg.start_soon(dispatch, rpc_b, "serial-b")
        runs = [r for reply in replies for r in reply["runs"]]
        assert len(runs) == 2
        # Per-step concurrency 1: both completed (neither saw "fork busy"), one after the other.
        assert [r["resultStatus"] for r in runs] == ["completed", "completed"]
        first, second = sorted(runs, key=lambda r: r["startedAt"])
        assert first["completedAt"] <= second["startedAt"]
        assert git(fork, "rev-parse", "HEAD") == head
        assert git(fork, "status", "--porcelain") == ""
        assert git(fork, "symbolic-ref", "--short", "HEAD") == "main"
        await rpc_a.ws.close()
        await rpc_b.ws.close()
    finally:
        assert daemon.stop(signal.SIGTERM) == 0
