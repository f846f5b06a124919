"""The remote commands as an operator runs them: real processes against a real daemon."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from support.backend import WORKSPACE, Backend


def workspace(
    backend_url: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WORKSPACE), "--backend-url", backend_url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        input=stdin,
    )


def test_dispatch_wait_replay_list_cancel(backend: Backend, tmp_path: Path) -> None:
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps({"id": "cli-1", "type": "demo.event"}))
    done = workspace(backend.url, "dispatch", str(event_file), "--wait", "--json")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["status"] == "accepted" and reply["flowStatus"] == "completed"
    assert "hello" in done.stderr
    human = workspace(backend.url, "dispatch", str(event_file))
    assert human.returncode == 0 and "duplicate" in human.stdout
    replayed = workspace(backend.url, "replay", "cli-1", "--wait")
    assert replayed.returncode == 0 and "_replay" in replayed.stdout
    listed = workspace(backend.url, "flow-runs", "--event-id", "cli-1", "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)["runs"]) == 2
    shown = workspace(backend.url, "events", "--limit", "500")
    assert shown.returncode == 0 and "cli-1" in shown.stdout
    nap = workspace(
        backend.url, "dispatch", "-", "--json", stdin='{"id":"cli-nap","type":"sleep.event"}'
    )
    run_id = json.loads(nap.stdout)["runIds"][0]
    canceled = workspace(backend.url, "cancel", run_id)
    assert canceled.returncode == 0 and "canceled" in canceled.stdout


def test_bad_input_exits_2(backend: Backend, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert workspace(backend.url, "dispatch", str(bad)).returncode == 2
    bad.write_text('{"type": "demo.event"}')
    missing_id = workspace(backend.url, "dispatch", str(bad))
    assert missing_id.returncode == 2 and "id" in missing_id.stderr
    assert workspace(backend.url, "cancel", "run_nope").returncode == 2


def test_unreachable_backend_exits_4(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = workspace(f"ws://127.0.0.1:{port}", "flow-runs")
    assert done.returncode == 4
    assert "backend not reachable" in done.stderr and "workspace backend" in done.stderr
