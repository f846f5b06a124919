"""Logging: one set-up for every command, JSON lines from the daemon (uvicorn's included)."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from support.backend import WORKSPACE, Backend
from support.flows import write_flow

from workspace_adapter import cli, client, cliparser, following
from workspace_adapter.base import logs
from workspace_adapter.base.errors import UserError, error_handler


def _unconfigure() -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == logs._HANDLER_NAME]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(False)
    structlog.reset_defaults()
    logs._applied = None


@pytest.fixture
def fresh_logs() -> Iterator[None]:
    """Logging as an unconfigured process has it, during the test and for the ones after."""
    wanted = dict(logs._wanted)
    _unconfigure()
    yield
    _unconfigure()
    logs._wanted.update(wanted)


def bad_handshake(host: str, port: int) -> bytes:
    """An upgrade request without Sec-WebSocket-Key: the server must refuse it."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        return sock.recv(4096)


def test_the_daemon_writes_only_json_lines_uvicorn_included(tmp_path: Path) -> None:
    root = write_flow(tmp_path / "ws", "trivial")
    daemon = Backend(root, tmp_path / "data", "--log-format", "json").start()
    try:
        outcome = anyio.run(
            lambda: following.dispatch_and_follow(
                daemon.url, {"id": "ev-log-1", "type": "load.trivial", "payload": {}}
            )
        )
        [run_id] = outcome.run_ids
        host, port = daemon.url.removeprefix("ws://").rsplit(":", 1)
        assert bad_handshake(host, int(port)).startswith(b"HTTP/1.1 400")
        with urllib.request.urlopen(daemon.http + "/healthz", timeout=5) as response:
            assert response.status == 200
    finally:
        assert daemon.stop() == 0
    lines = [line for line in daemon.stderr().splitlines() if line.strip()]
    parsed: list[dict[str, Any]] = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    events = [entry["event"] for entry in parsed]
    assert events[0] == "backend.started" and events[-1] == "backend.stopped"
    by_event = {entry["event"]: entry for entry in parsed if entry.get("run_id") == run_id}
    for name in ("step.started", "step.finished"):
        assert by_event[name]["event_id"] == "ev-log-1", by_event
        assert by_event[name]["level"] == "info"
    uvicorn = [entry for entry in parsed if entry.get("logger", "").startswith("uvicorn")]
    assert any("rejected" in entry["event"] for entry in uvicorn), uvicorn
    assert any("[accepted]" in entry["event"] for entry in uvicorn), uvicorn
    [access] = [entry for entry in uvicorn if entry.get("path") == "/healthz"]
    assert (access["logger"], access["method"], access["status"]) == ("uvicorn.access", "GET", 200)
    assert all("timestamp" in entry and "level" in entry for entry in parsed)


def test_console_format_is_for_reading_and_uncoloured_off_a_terminal(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    daemon = Backend(root, tmp_path / "data", "--log-format", "console").start()
    try:
        with urllib.request.urlopen(daemon.http + "/healthz", timeout=5):
            pass
    finally:
        assert daemon.stop() == 0
    text = daemon.stderr()
    assert "backend.started" in text and "/healthz" in text
    assert "{" not in text.splitlines()[0] and "\x1b[" not in text


def test_a_daemon_that_cannot_start_says_why_as_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != client.TOKEN_ENV}
    done = subprocess.run(
        [
            str(WORKSPACE),
            "--log-format",
            "json",
            "backend",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--cwd",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2, done
    [line] = done.stderr.splitlines()
    said = json.loads(line)
    assert (said["event"], said["level"], said["exit_code"]) == ("command.failed", "error", 2)
    assert "non-loopback" in said["message"]


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["backend"], "info"),
        (["serve"], "info"),
        (["watch"], "info"),
        (["watch", "--once"], "warning"),
        (["doctor"], "warning"),
        (["backend", "--log-level", "error"], "error"),
    ],
)
def test_daemons_log_from_info_by_default(argv: list[str], level: str) -> None:
    ns = cliparser.build_parser(cliparser.command_named(argv)).parse_args(argv)
    assert cli.globals_of(ns).log_level == level


def test_run_and_tick_only_record_the_settings(fresh_logs: None) -> None:
    ns = cli.quick_parse(["--log-format", "console", "tick"])
    assert ns is not None and ns.log_format == "console"
    logs.setup("debug", "console")
    assert logs._applied is None  # nothing imported or applied until a logger is made


def test_stdlib_loggers_render_like_structlog(
    fresh_logs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    logs.setup("info", "json", daemon=True)
    logs.configure()
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "POST", "/events", "1.1", 202
    )
    logging.getLogger("uvicorn.error").debug("below the level")
    try:
        raise ValueError("kaput")
    except ValueError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    logs.get_logger(component="t").info("plain.event", run_id="r1")
    lines = [json.loads(line) for line in err.getvalue().splitlines()]
    access, crash, plain = lines
    assert (access["method"], access["path"], access["status"]) == ("POST", "/events", 202)
    assert crash["level"] == "error" and "ValueError: kaput" in crash["exception"]
    assert (plain["event"], plain["run_id"]) == ("plain.event", "r1")


def test_a_daemon_in_json_mode_ends_with_a_json_line(
    fresh_logs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    logs.setup("info", "json", daemon=True)
    logs.configure()
    with pytest.raises(SystemExit) as exc, error_handler(None):
        raise UserError("port 3586 is in use", 2)
    assert exc.value.code == 2
    said = json.loads(err.getvalue())
    assert (said["event"], said["message"]) == ("command.failed", "port 3586 is in use")


def test_colour_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not logs.colours_wanted() and logs.format_for(None) == "json"
    monkeypatch.setattr("sys.stderr", Terminal())
    assert logs.colours_wanted() and logs.format_for(None) == "console"
    assert logs.format_for("json") == "json"
    monkeypatch.setenv("NO_COLOR", "1")
    assert not logs.colours_wanted()


def test_the_watch_daemon_in_json_mode_says_everything_as_json(tmp_path: Path) -> None:
    (tmp_path / "workspace.toml").write_text(
        """
[workspace]
name = "w"
[[workspace.sources]]
id = "gone"
kind = "git-tags"
url = "nowhere.git"
repo = "acme/gone"
interval = "1h"
""",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "GIT_"))}
    env["DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen(
        [str(WORKSPACE), "--workspace-root", str(tmp_path), "watch", "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    events: list[dict[str, Any]] = []
    try:
        for line in proc.stderr:  # a failing source is said as a line for people: here as JSON
            events.append(json.loads(line))
            if events[-1]["event"] == "source.retry":
                break
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    events += [json.loads(line) for line in rest.splitlines()]
    retry = next(e for e in events if e["event"] == "source.retry")
    assert retry["message"].startswith("gone: poll failed: ")
