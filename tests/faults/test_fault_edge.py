"""The daemon's edge, tried as an attacker or an unlucky operator would (issue 12, items 5-11, 16).

Each test starts real daemons (``workspace backend`` subprocesses) and talks to them over real
sockets: a stolen store lock, a blank token, JSON nested too deeply, a forged Host header, slow
clients, a daemon out of file descriptors, list replies larger than memory should hold.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.backend import WORKSPACE, Backend
from support.waiting import wait_until


def start_refused(
    root: Path, data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``workspace backend --port 0`` run to its exit: it should refuse to start."""
    where = ["--cwd", str(root), "--data-dir", str(data_dir)]
    return subprocess.run(
        [str(WORKSPACE), "backend", "--port", "0", *where, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The refusal's stderr, checked to be one line with no traceback."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


# --- item 10: the store lock cannot be stolen ---------------------------------------------------


def test_deleting_backend_lock_does_not_let_a_second_daemon_in(root: Path, tmp_path: Path) -> None:
    """A second daemon on the data dir of a running one is refused (exit 2, one line naming the
    folder) even after ``backend.lock`` was deleted, and the first one's running run is left
    alone (it is not marked "failed, backend restarted")."""
    data = tmp_path / "data"
    first = Backend(root, data).start()
    try:
        run_id = first.call("flow.dispatch", {"id": "nap-1", "type": "sleep.event"})["runIds"][0]  # type: ignore[index]

        def status() -> str:
            return first.call("flow.getRun", {"runId": run_id})["run"]["status"]  # type: ignore[index]

        wait_until(lambda: status() == "running", "the nap to start")
        (data / "backend.lock").unlink()
        second = start_refused(root, data)
        assert second.returncode == 2, second.stderr
        line = one_line(second)
        assert str(data) in line and "another backend" in line
        assert "listening" not in second.stdout
        assert status() == "running"
    finally:
        assert first.stop() == 0


# --- item 16 (the server's half): a blank token is refused ---------------------------------------


@pytest.mark.parametrize("where", ["env", "file"])
def test_a_blank_token_is_refused_at_start(root: Path, tmp_path: Path, where: str) -> None:
    """A token of only whitespace (in the variable or in the token file) would be taken and
    then match nothing a client sends: the daemon refuses to start, exit 2, one line saying the
    token is blank and how to fix it."""
    token_file = tmp_path / "token"
    token_file.write_text("  \n\t\n")
    if where == "env":
        done = start_refused(root, tmp_path / "data", env={"CODEX_WORKSPACE_BACKEND_TOKEN": " "})
        expected = "CODEX_WORKSPACE_BACKEND_TOKEN is blank"
    else:
        done = start_refused(root, tmp_path / "data", "--token-file", str(token_file))
        expected = f"--token-file {token_file} is blank"
    assert done.returncode == 2, done.stderr
    line = one_line(done)
    assert expected in line and ("unset" in line or "write" in line), line
    assert "listening" not in done.stdout
