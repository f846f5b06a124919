"""Bad input answered up front, and what senders chose shown safely on a terminal.

* An event over the backend's 1 MiB frame is refused by the CLI before it connects (exit 2,
  one line naming the size and the limit), not reported as a backend that is not reachable.
* A NUL in an event's id, type, source or payload, or another control character in its id or
  type, is refused: by the backend (-32602 naming the field, HTTP 400), by the CLI (exit 2),
  and by the fork maintenance step for a tag that reaches it anyway (one line, no crash log).
* Ids, timestamps and output holding ESC sequences, BEL, ``\\r`` and ``\\n`` (stored before the
  check, or in fields it leaves free) come out of ``events``, ``flow-runs``, ``dispatch`` and
  ``doctor`` escaped: one line per row, no raw control byte.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.backend import WORKSPACE, Backend, free_port
from support.flows import write_flows
from support.waiting import wait_until
from support.wire import http, open_rpc

from workspace_adapter.backend.records import new_flow_run
from workspace_adapter.backend.store import BackendStore
from workspace_adapter.events import MAX_EVENT_BYTES
from workspace_adapter.local.state import StateStore
from workspace_adapter.local.taskruns import new_task_run

REPO_ROOT = Path(__file__).resolve().parents[2]
RAW_CONTROLS = ("\x1b", "\x07", "\r", "\x00", "\x9b")
# What an attacker's id would do on a terminal: retitle it, ring, clear it, break the row.
EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[Hevil\r\nfake-row"

WORKSPACE_TOML = """
[workspace]
name = "input"

[[workspace.tasks]]
id = "ping"
kind = "flow"
flow = "demo.event"
"""

ECHO_FLOW = """
name = "echo"
[[steps]]
name = "say"
runner = "python"
script = "say.py"
[steps.trigger]
type = "echo.event"
"""

ECHO_SCRIPT = """
import json, sys
text = json.loads(sys.stdin.readline())["flow"]["event"]["payload"]["text"]
print(text)
print("FLOW_RESULT " + json.dumps({"status": "completed", "message": text}))
"""


def workspace(
    *args: str, root: Path | None = None, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [str(WORKSPACE)]
    if root is not None:
        argv += ["--workspace-root", str(root)]
    if url is not None:
        argv += ["--backend-url", url]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60)


def unreachable() -> str:
    return f"ws://127.0.0.1:{free_port()}"


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr, done.stderr
    return lines[0]


def no_raw_controls(text: str) -> None:
    found = sorted({c for c in text if c in RAW_CONTROLS})
    assert not found, f"raw control characters {found!r} in {text!r}"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    ws = write_flows(tmp_path / "ws")
    (ws / "workspace.toml").write_text(textwrap.dedent(WORKSPACE_TOML), encoding="utf-8")
    echo = ws / "flows" / "echo"
    echo.mkdir()
    (echo / "flow.toml").write_text(textwrap.dedent(ECHO_FLOW), encoding="utf-8")
    (echo / "say.py").write_text(textwrap.dedent(ECHO_SCRIPT), encoding="utf-8")
    return ws


@pytest.fixture
def backend(root: Path, tmp_path: Path) -> Iterator[Backend]:
    daemon = Backend(root, tmp_path / "data").start()
    yield daemon
    daemon.stop()


# --- 13: an event over the frame limit ---------------------------------------------------------


def test_an_event_over_1_mib_is_bad_input_before_connecting(
    backend: Backend, tmp_path: Path
) -> None:
    """`workspace dispatch` of a 1.1 MiB event: exit 2 and one line naming its size and the
    limit, against a live backend (nothing stored) and against none at all (so it never
    connected: not exit 4)."""
    event = {"id": "too-big", "type": "demo.event", "payload": {"blob": "x" * 1_150_000}}
    file = write_json(tmp_path / "big.json", event)
    size = len(json.dumps(event, separators=(",", ":")))
    for url in (backend.url, unreachable()):
        done = workspace("dispatch", str(file), url=url)
        assert done.returncode == 2, done.stderr
        line = one_error_line(done)
        assert f"{size:,} bytes" in line and f"{MAX_EVENT_BYTES:,}" in line, line
        assert "1 MiB" in line and "not reachable" not in line, line
    assert http("GET", f"{backend.http}/events/too-big")[0] == 404
    # Just under the limit goes through.
    fits = {"id": "fits", "type": "demo.event", "payload": {"blob": "x" * (MAX_EVENT_BYTES - 100)}}
    done = workspace("dispatch", str(write_json(tmp_path / "fits.json", fits)), url=backend.url)
    assert done.returncode == 0, done.stderr


def test_a_flow_task_event_over_1_mib_is_bad_input(root: Path, tmp_path: Path) -> None:
    """`workspace run <flow task> --event FILE` whose event is over the limit: exit 2, the
    record says why, and no connection is tried (the backend URL answers nothing)."""
    file = write_json(tmp_path / "big.json", {"payload": {"blob": "x" * 1_150_000}})
    done = workspace("run", "ping", "--event", str(file), root=root, url=unreachable())
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "1 MiB" in done.stdout + done.stderr and "not reachable" not in done.stdout


# --- 14: NUL and control characters in events ---------------------------------------------------

BAD_EVENTS = [
    ({"id": "nul\x00id", "type": "demo.event"}, "event.id"),
    ({"id": "esc\x1b[2Jid", "type": "demo.event"}, "event.id"),
    ({"id": "ok-1", "type": "demo\nevent"}, "event.type"),
    ({"id": "ok-2", "type": "demo.event", "source": "src\x00"}, "event.source"),
    ({"id": "ok-3", "type": "demo.event", "payload": {"tag": "v1\x00"}}, "event.payload.tag"),
    (
        {"id": "ok-4", "type": "demo.event", "payload": {"list": ["a", {"repo": "r\x00"}]}},
        "event.payload.list[1].repo",
    ),
]


async def test_the_backend_refuses_nul_and_control_characters_naming_the_field(
    backend: Backend,
) -> None:
    """Over the WebSocket: -32602 with ``data.field``; over HTTP: 400 naming the field. Nothing
    is stored, and the same ids without the bad character are accepted afterwards."""
    rpc = await open_rpc(backend.url)
    try:
        for event, field in BAD_EVENTS:
            reply = await rpc.reply(await rpc.send("flow.dispatch", {"event": event}))
            assert reply["error"]["code"] == -32602, reply
            assert reply["error"]["data"]["field"] == field, reply
            assert field.removeprefix("event.").split("[")[0] in reply["error"]["message"]
            status, body = await asyncio.to_thread(
                http, "POST", f"{backend.http}/events", json.dumps(event).encode()
            )
            assert status == 400, body
            assert field.removeprefix("event.") in json.dumps(body), body
        listed = await rpc.call("flow.listEvents", {"limit": 100})
        assert listed["events"] == []
        accepted = await rpc.call("flow.dispatch", {"event": {"id": "ok-3", "type": "demo.event"}})
        assert accepted["status"] == "accepted"
    finally:
        await rpc.ws.close()


def test_the_cli_refuses_nul_and_control_characters_with_exit_2(root: Path, tmp_path: Path) -> None:
    """`workspace dispatch` (before connecting) and `workspace flow run --event` (before any
    step starts): exit 2 and one line naming the field, no crash log."""
    for i, (event, field) in enumerate(BAD_EVENTS):
        file = write_json(tmp_path / f"bad-{i}.json", event)
        done = workspace("dispatch", str(file), url=unreachable())
        assert done.returncode == 2, done.stderr
        assert field in one_error_line(done)
        done = workspace("flow", "run", "demo", "--event", str(file), root=root)
        assert done.returncode == 2, done.stderr
        assert field in one_error_line(done)
    assert not (root / ".workspace" / "logs").exists()


def test_the_maintenance_step_refuses_a_nul_tag_in_one_line(workspace_root: Path) -> None:
    """A tag with a NUL that reaches the fork maintenance step anyway (a context from another
    backend): `failed` with one line naming payload.tag, no crash log, the fork untouched."""
    flow = workspace_root / "flows" / "patch-moi-harness"
    config = tomllib.loads((flow / "flow.toml").read_text())["config"]
    payload = {"repo": "peezy-tech/patch-moi-harness", "tag": "v0.1.1\x00"}
    context = {
        "flow": {"config": config, "event": {"id": "e", "type": "upstream.release"}},
        "runtime": {"workspaceRoot": str(workspace_root)},
    }
    context["flow"]["event"]["payload"] = payload
    done = subprocess.run(
        [sys.executable, str(flow / "step.py")],
        input=json.dumps(context) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workspace_root,
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    result = json.loads(last.removeprefix("FLOW_RESULT "))
    assert result["status"] == "failed", result
    assert "payload.tag" in result["message"] and "NUL" in result["message"], result
    assert "unexpected" not in done.stdout + done.stderr
    assert not list((workspace_root / ".workspace").glob("logs/*"))


# --- 15: control characters on the terminal ------------------------------------------------------

STORED_IDS = [f"old-{i}-{EVIL}" for i in range(3)]


def seed_old_events(data_dir: Path) -> None:
    """Events whose ids hold control characters, stored as a version without the check did."""
    store = BackendStore(data_dir)
    try:
        for event_id in STORED_IDS:
            event = {
                "id": event_id,
                "type": "demo.event",
                "receivedAt": f"2026-11-24T12:00:00Z{EVIL}",
                "payload": {},
            }
            store.dispatch(event, [new_flow_run(event_id, "demo", "hello")])
    finally:
        store.close()


def test_stored_control_characters_reach_the_terminal_escaped(root: Path, tmp_path: Path) -> None:
    """`events`, `flow-runs`, `dispatch --wait` and `doctor` over ids, timestamps, step output
    and run reasons full of ESC sequences, BEL, CR and LF: one printed line per row, no raw
    control byte, the escapes visible; `--json` keeps the exact strings."""
    seed_old_events(tmp_path / "data")
    backend = Backend(root, tmp_path / "data").start()
    try:
        url = backend.url

        def all_done() -> bool:
            runs = json.loads(workspace("flow-runs", "--json", url=url).stdout)["runs"]
            return len(runs) == 3 and all(r["status"] == "completed" for r in runs)

        wait_until(all_done, "the stored runs to complete after the restart")
        # A fresh event may carry control characters where the check leaves them: receivedAt.
        fresh = {"id": "fresh", "type": "echo.event", "receivedAt": EVIL, "payload": {"text": EVIL}}
        done = workspace("dispatch", str(write_json(tmp_path / "e.json", fresh)), "--wait", url=url)
        assert done.returncode == 0, done.stderr
        no_raw_controls(done.stdout + done.stderr)
        assert "] \\x1b]0;pwned\\x07\\x1b[2J\\x1b[Hevil\n" in done.stdout  # the step's line
        events = workspace("events", url=url)
        assert events.returncode == 0, events.stderr
        no_raw_controls(events.stdout)
        assert len(events.stdout.splitlines()) == 4, events.stdout
        assert all("\\r\\nfake-row" in row for row in events.stdout.splitlines())
        runs = workspace("flow-runs", url=url)
        no_raw_controls(runs.stdout)
        assert len(runs.stdout.splitlines()) == 4, runs.stdout
        as_json = json.loads(workspace("events", "--json", url=url).stdout)["events"]
        assert {e["id"] for e in as_json} == {*STORED_IDS, "fresh"}
    finally:
        backend.stop()
    record = new_task_run("ping", "flow", dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC))
    record.status, record.reason, record.finished_at = "failed", EVIL, record.started_at
    StateStore.for_workspace(root, "local").open().insert(record)
    doctor = workspace("doctor", root=root, url=unreachable())
    no_raw_controls(doctor.stdout)
    assert "ping: failed (\\x1b]0;pwned" in doctor.stdout, doctor.stdout
