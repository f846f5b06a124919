"""`workspace backend` serves the workspace root it is given, not the folder it starts in."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from support.backend import WORKSPACE
from support.flows import write_flow
from support.wire import open_rpc


def start_rooted(root: Path, cwd: Path) -> subprocess.Popen[str]:
    """``workspace --workspace-root ROOT backend`` started from another folder."""
    return subprocess.Popen(
        [str(WORKSPACE), "--workspace-root", str(root), "backend", "--port", "0"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def test_backend_uses_the_workspace_root_for_flows_and_data(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    write_flow(root, "demo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = start_rooted(root, elsewhere)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]

        async def dispatch() -> dict[str, object]:
            rpc = await open_rpc(url)
            try:
                event = {"id": "rooted", "type": "demo.event"}
                reply: dict[str, object] = await rpc.call("flow.dispatch", {"event": event})
                return reply
            finally:
                await rpc.ws.close()

        assert (await dispatch())["matched"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert (root / ".workspace" / "backend").is_dir()
    assert not (elsewhere / ".workspace").exists()
