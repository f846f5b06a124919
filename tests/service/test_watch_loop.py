"""``workspace watch`` without ``--once``: passes on the sources' intervals until SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import GIT_SOURCE, NO_PUSH, records, write_workspace
from support.backend import running_backend

from workspace_adapter.harness import cut_release


def test_the_watch_loop_picks_up_a_release_and_stops_on_sigterm(
    workspace_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)
    root = workspace_root
    write_workspace(root, GIT_SOURCE.replace('interval = "1h"', 'interval = "1s"'))
    with running_backend(root, tmp_path / "backend", env=NO_PUSH) as backend:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workspace_adapter",
                "watch",
                "--workspace-root",
                str(root),
                "--backend-url",
                backend.url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = proc.stdout
        assert lines is not None
        said: list[str] = []

        def say_until(part: str) -> None:
            """Read the watch's lines (each is printed once recorded) until one has ``part``."""
            for line in lines:
                said.append(line)
                if part in line:
                    return
            raise AssertionError(f"watch ended before saying {part!r}: {''.join(said)}")

        try:
            say_until("upstream: primed with ")
            cursor = records(root).cursor("upstream")
            assert cursor is not None and cursor.primed_at is not None
            cut_release(root)
            say_until("v0.1.4: changed")
            assert [a.status for a in records(root).attempts()] == ["changed"]
            proc.send_signal(signal.SIGTERM)
            rest, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = "".join(said) + rest
    assert proc.returncode == 0, err
    assert "primed with 4 release(s)" in out
    assert "v0.1.4: changed" in out
