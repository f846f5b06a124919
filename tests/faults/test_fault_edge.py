"""The daemon's edge, tried as an attacker or an unlucky operator would (issue 12, items 5-11, 16).

Each test starts real daemons (``workspace backend`` subprocesses) and talks to them over real
sockets: a stolen store lock, a blank token, JSON nested too deeply, a forged Host header, slow
clients, a daemon out of file descriptors, list replies larger than memory should hold.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.backend import WORKSPACE, Backend
from support.waiting import wait_until
from support.wire import http, open_rpc

from workspace_adapter import protocol as rpc


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


# --- item 11: JSON nested too deeply is a parse error, not an internal one -----------------------


def nested(depth: int, closed: bool = True, inner: str = "1") -> str:
    """JSON arrays and objects nested ``depth`` levels around ``inner`` (unclosed: no tail)."""
    opening = "".join('{"k":' if level % 2 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 else "]" for level in reversed(range(depth)))
    return opening + inner + (closing if closed else "")


def deep_request(depth: int) -> str:
    """A well-formed dispatch whose event payload nests ``depth`` levels deep."""
    event = f'{{"id":"deep-{depth}","type":"demo.event","payload":{{"x":{nested(depth)}}}}}'
    return f'{{"jsonrpc":"2.0","id":7,"method":"flow.dispatch","params":{{"event":{event}}}}}'


async def answer_to(url: str, frame: str) -> dict[str, Any]:
    """The reply to ``frame``, checked to arrive before the reply to a request sent after it."""
    rpc = await open_rpc(url)
    try:
        await rpc.ws.send(frame)
        sentinel = await rpc.send("flow.listRuns", {"limit": 1})
        reply = await rpc.read()
        assert "result" in await rpc.reply(sentinel)
        return reply
    finally:
        await rpc.ws.close()


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_deeply_nested_json_is_a_parse_error(shared_daemon: Backend, depth: int) -> None:
    """JSON nested 1,000 or 100,000 levels deep (well-formed, unclosed, or inside a request's
    params) is answered -32700 with id null on the WebSocket and 400 with a JSON error body on
    HTTP, and leaves no traceback in the daemon's log."""
    for frame in (nested(depth), nested(depth, closed=False), deep_request(depth)):
        assert len(frame) < 1024 * 1024
        reply = await answer_to(shared_daemon.url, frame)
        assert reply["id"] is None and reply["error"]["code"] == -32700, reply
        assert "nested deeper than 512 levels" in reply["error"]["message"], reply
        for path in ("/events", "/events/deep/replay"):
            status, body = http("POST", shared_daemon.http + path, frame.encode())
            assert status == 400 and isinstance(body, dict), (status, body)
            assert body["error"].startswith("body is not valid JSON"), body
    assert "Traceback" not in shared_daemon.stderr()


def test_the_nesting_limit_is_512_levels() -> None:
    """512 levels are taken (an array of arrays is a batch, refused as such); 513 are not."""
    with pytest.raises(rpc.RpcFault) as taken:
        rpc.decode_request(nested(512))
    assert taken.value.code == -32600
    with pytest.raises(rpc.RpcFault) as refused:
        rpc.decode_request(nested(513))
    assert refused.value.code == -32700 and "512" in refused.value.message
    assert rpc.decode_json('"' + "[" * 600 + '"') == "[" * 600  # brackets in a string


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    depth=st.integers(min_value=400, max_value=200_000),
    closed=st.booleans(),
    inside_request=st.booleans(),
)
def test_random_deep_nesting_is_never_an_internal_error(
    shared_daemon: Backend, depth: int, closed: bool, inside_request: bool
) -> None:
    """The fuzz test's claim (random frames never get -32603), for the frames it cannot make:
    nesting from a depth that is fine to one 200,000 levels deep."""
    frame = deep_request(depth) if inside_request else nested(depth, closed)
    reply = asyncio.run(answer_to(shared_daemon.url, frame))
    if "error" in reply:
        assert reply["error"]["code"] in (-32700, -32600, -32602), reply
    else:
        assert reply["id"] == 7 and reply["result"]["status"] == "accepted", reply
