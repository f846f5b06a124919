"""The daemon's edge, tried as an attacker or an unlucky operator would (issue 12, items 5-11, 16).

Each test starts real daemons (``workspace backend`` subprocesses) and talks to them over real
sockets: a stolen store lock, a blank token, JSON nested too deeply, a forged Host header, slow
clients, a daemon out of file descriptors, list replies larger than memory should hold.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.backend import WORKSPACE, Backend
from support.flows import write_flows
from support.waiting import until, wait_until
from support.wire import http, open_rpc

from workspace_adapter import protocol as rpc
from workspace_adapter.commands.backend import PUBLIC_HOST_ENV, READ_TIMEOUT_ENV

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


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
        assert reply["id"] == 7 and reply["result"]["status"] in ("accepted", "duplicate"), reply


# --- one daemon for the tests below: a public name, and a 1 s deadline on reading requests -----

PUBLIC = "backend.example"
BLOB = "b" * 480_000  # kept twice in a stored event (payload and raw): about 1 MB a record
BIG_EVENTS = 12


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    base = tmp_path_factory.mktemp("edge")
    env = {READ_TIMEOUT_ENV: "1"}
    # The flag, as an operator types it (the variable is read when no flag is given).
    backend = Backend(
        write_flows(base / "ws"), base / "data", "--public-host", PUBLIC, env=env
    ).start()
    yield backend
    assert backend.stop() == 0, backend.stderr()
    assert "Traceback" not in backend.stderr()


def host_port(backend: Backend) -> tuple[str, int]:
    host, port = backend.url.removeprefix("ws://").rsplit(":", 1)
    return host, int(port)


# --- item 6: the Host header names this backend ---------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["rebind.attacker.example", "rebind.attacker.example:{port}", "127.0.0.1.attacker.example"],
)
def test_a_foreign_host_header_is_refused(edge: Backend, host: str) -> None:
    """A DNS-rebinding page reaches the daemon under the attacker's name: every route but
    /healthz answers 421 with a JSON error naming --public-host; the WebSocket upgrade is
    refused before it is accepted."""
    header = host.format(port=host_port(edge)[1])
    for path in ("/runs", "/events", "/events/x", "/runs/x"):
        status, body = http("GET", edge.http + path, headers={"Host": header})
        assert status == 421 and isinstance(body, dict), (path, status, body)
        assert "--public-host" in body["error"], body
    assert http("GET", edge.http + "/healthz", headers={"Host": header}) == (200, {"ok": True})
    assert upgrade_status(edge, header).startswith(b"HTTP/1.1 421 ")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:{port}",
        "localhost",
        "LOCALHOST:{port}",
        "[::1]:{port}",
        PUBLIC,
        "Backend.Example:{port}",
    ],
)
def test_loopback_and_public_names_are_served(edge: Backend, host: str) -> None:
    """The loopback names (with or without the port) and a --public-host name are served."""
    header = host.format(port=host_port(edge)[1])
    status, body = http("GET", edge.http + "/runs?limit=1", headers={"Host": header})
    assert status == 200 and "runs" in body, (status, body)
    assert upgrade_status(edge, header).startswith(b"HTTP/1.1 101 ")


def upgrade_status(backend: Backend, host: str) -> bytes:
    """The status line the daemon answers a WebSocket upgrade carrying ``Host: host`` with."""
    with socket.create_connection(host_port(backend), timeout=10) as sock:
        sock.sendall(UPGRADE.replace(b"Host: 127.0.0.1", f"Host: {host}".encode()))
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer


def test_a_non_loopback_bind_needs_a_public_host(root: Path, tmp_path: Path) -> None:
    """Listening beyond loopback without naming the host clients use is refused at start:
    exit 2, one line saying to pass --public-host."""
    env = {"CODEX_WORKSPACE_BACKEND_TOKEN": "t0ken", PUBLIC_HOST_ENV: ""}
    done = start_refused(root, tmp_path / "data", "--host", "0.0.0.0", env=env)
    assert done.returncode == 2, done.stderr
    line = one_line(done)
    assert "--public-host NAME" in line and "0.0.0.0" in line, line
    assert "listening" not in done.stdout


# --- item 7: slow request heads and bodies are cut off ------------------------------------------


async def slow_client(host: str, port: int, kind: str) -> bytes:
    """What the daemon sends a client that never finishes its request, up to its close."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if kind == "head":
            writer.write(b"GET /runs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        elif kind == "body":
            writer.write(
                b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"id": "slow-'
            )
        await writer.drain()
        return await reader.read()  # until the daemon closes the connection
    finally:
        writer.close()


async def test_slow_heads_and_bodies_are_closed(edge: Backend) -> None:
    """200 clients that never finish a request head (or send nothing at all) and 50 that never
    finish a body are closed once the read deadline (1 s here, 10 s by default) passes; a slow
    body hears 408 with a JSON error first. Their descriptors are given back."""
    host, port = host_port(edge)
    baseline = open_fds(edge.pid)
    kinds = ["head"] * 190 + ["nothing"] * 10 + ["body"] * 50
    async with asyncio.timeout(20):
        answers = await asyncio.gather(*(slow_client(host, port, kind) for kind in kinds))
    for kind, answer in zip(kinds, answers, strict=True):
        if kind == "body":
            status, _, rest = answer.partition(b"\r\n")
            assert status == b"HTTP/1.1 408 Request Timeout", answer
            assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"].startswith("the body"), rest
        else:
            assert answer == b"", answer
    await until(lambda: open_fds(edge.pid) <= baseline + 5, "the daemon to let the sockets go")
    assert http("GET", edge.http + "/healthz")[0] == 200


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- item 5: list replies are capped in bytes and continue from a cursor -------------------------


@pytest.fixture(scope="module")
def big_events(edge: Backend) -> list[str]:
    """Ids of :data:`BIG_EVENTS` events of about 1 MB each (stored newest last)."""

    async def fill() -> list[str]:
        rpc = await open_rpc(edge.url, max_size=None)
        ids = [f"big-{i}" for i in range(BIG_EVENTS)]
        for event_id in ids:
            event = {"id": event_id, "type": "big.event", "payload": {"blob": BLOB}}
            assert (await rpc.call("flow.dispatch", event))["status"] == "accepted"
        await rpc.ws.close()
        return ids

    return asyncio.run(fill())


def pages(fetch: Callable[[str | None], dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Every page a list call gives, following ``nextCursor`` to the end."""
    found = [fetch(None)]
    while "nextCursor" in found[-1]:
        found.append(fetch(found[-1]["nextCursor"]))
    for page in found:
        size = len(json.dumps(page[key]))
        assert page[key] and (size <= 4 * 1024 * 1024 or len(page[key]) == 1), size
    return found


def test_list_events_is_cut_in_bytes_and_continues(edge: Backend, big_events: list[str]) -> None:
    """Twelve 1 MB events do not come in one reply of 12 MB: the WebSocket and HTTP lists stop
    at 4 MiB of records, never splitting one, carry ``nextCursor``, and passing it back as
    ``cursor`` gives the rest, newest first, each event once; an uncut reply has no such key."""

    def over_ws(cursor: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"type": "big.event", "limit": 200}
        if cursor is not None:
            params["cursor"] = cursor
        return edge.call("flow.listEvents", params)  # type: ignore[return-value]

    def over_http(cursor: str | None) -> dict[str, Any]:
        query = "type=big.event&limit=200" + (f"&cursor={cursor}" if cursor else "")
        status, body = http("GET", f"{edge.http}/events?{query}")
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    for fetch in (over_ws, over_http):
        found = pages(fetch, "events")
        assert len(found) >= 3, [len(p["events"]) for p in found]
        events = [e for page in found for e in page["events"]]
        assert [e["id"] for e in events] == big_events[::-1]
        assert all(e["payload"]["blob"] == BLOB for e in events)
    small = edge.call("flow.listEvents", {"type": "big.event", "limit": 2})
    assert set(small) == {"events"} and len(small["events"]) == 2  # type: ignore[arg-type,index]


def test_list_runs_is_cut_in_bytes_and_continues(edge: Backend) -> None:
    """Runs with long output tails are paged the same way, over the WebSocket and HTTP, with
    the ``eventId`` echo kept on every page."""
    insert_fat_runs(edge.data_dir / "backend.sqlite", "fat-runs", count=10, tail=300_000)

    def over_ws(cursor: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"eventId": "fat-runs", "limit": 200}
        if cursor is not None:
            params["cursor"] = cursor
        return edge.call("flow.listRuns", params)  # type: ignore[return-value]

    def over_http(cursor: str | None) -> dict[str, Any]:
        query = "eventId=fat-runs&limit=200" + (f"&cursor={cursor}" if cursor else "")
        status, body = http("GET", f"{edge.http}/runs?{query}")
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    for fetch in (over_ws, over_http):
        found = pages(fetch, "runs")
        assert len(found) >= 2 and all(p["eventId"] == "fat-runs" for p in found)
        runs = [r for page in found for r in page["runs"]]
        assert [r["id"] for r in runs] == [f"run_fat_{i}" for i in reversed(range(10))]
        assert all(len(r["stdoutTail"]) == 300_000 for r in runs)


def insert_fat_runs(
    db_path: Path, event_id: str, *, count: int, tail: int, prefix: str = "run_fat"
) -> None:
    """``count`` completed runs of ``event_id`` with ``tail`` characters of stdout each, written
    straight into the daemon's store (as the daemon itself would after long steps)."""
    db = sqlite3.connect(db_path, timeout=10)
    try:
        with db:
            db.executemany(
                "INSERT INTO runs (id, event_id, flow_name, step_name, status, stdout_tail, "
                "created_at) VALUES (?, ?, 'fat', 'step', 'completed', ?, '2026-01-01T00:00:00Z')",
                [(f"{prefix}_{i}", event_id, "o" * tail) for i in range(count)],
            )
    finally:
        db.close()


def test_a_bad_cursor_is_refused(edge: Backend) -> None:
    """A cursor this backend did not give is bad input naming the field (-32602, 400)."""
    status, body = http("GET", f"{edge.http}/events?cursor=abc")
    assert status == 400 and body["field"] == "cursor", body

    async def ask() -> dict[str, Any]:
        rpc = await open_rpc(edge.url)
        reply = await rpc.reply(await rpc.send("flow.listRuns", {"cursor": "-1"}))
        await rpc.ws.close()
        return reply

    reply = asyncio.run(ask())
    assert reply["error"]["code"] == -32602 and reply["error"]["data"]["field"] == "cursor"


async def test_four_large_lists_at_once_keep_memory_bounded(
    edge: Backend, big_events: list[str]
) -> None:
    """Four clients listing 12 MB of events at once, over the WebSocket and over HTTP, grow
    the daemon by tens of MB at most (each reply is read row by row and stops at 4 MiB);
    before, four such lists of 1 MB events held every event of every reply at once."""

    async def listing() -> int:
        rpc = await open_rpc(edge.url, max_size=None)
        sent = await rpc.send("flow.listEvents", {"type": "big.event", "limit": 200})
        reply = await rpc.reply(sent)
        await rpc.ws.close()
        return len(reply["result"]["events"])

    before = edge.rss_kib()
    counts = await asyncio.gather(*(listing() for _ in range(4)))
    loop = asyncio.get_running_loop()
    query = f"{edge.http}/events?type=big.event&limit=200"
    await asyncio.gather(*(loop.run_in_executor(None, http, "GET", query) for _ in range(4)))
    grown = edge.rss_kib() - before
    assert all(0 < count < BIG_EVENTS for count in counts), counts
    assert grown < 64 * 1024, f"RSS grew {grown // 1024} MB"


# --- item 9: out of file descriptors -----------------------------------------------------------

FD_LIMIT = 64
# Runs the CLI with uvloop unavailable: the daemon falls back to asyncio's own loop.
WITHOUT_UVLOOP = (
    "import sys; sys.modules['uvloop'] = None; "
    "from workspace_adapter.cli import main; sys.exit(main())"
)


def start_with_fd_limit(root: Path, data_dir: Path, loop: str) -> tuple[subprocess.Popen[str], str]:
    """A daemon whose soft and hard RLIMIT_NOFILE are :data:`FD_LIMIT`; (process, URL)."""
    program = [str(WORKSPACE)] if loop == "uvloop" else [sys.executable, "-c", WITHOUT_UVLOOP]
    where = ["--port", "0", "--cwd", str(root), "--data-dir", str(data_dir)]
    stderr = open(data_dir.parent / f"{data_dir.name}-stderr.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [*program, "backend", *where],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        # Slow heads stay: the test holds its sockets until it lets them go.
        env={**os.environ, READ_TIMEOUT_ENV: "120"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT)),
    )
    stderr.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("workspace backend listening on "), line
    return proc, line.split()[-1]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_running_out_of_descriptors_is_overloaded_and_said_once(
    root: Path, tmp_path: Path, loop: str
) -> None:
    """With every descriptor taken by idle connections, a dispatch is answered -32001
    (overloaded, retry) instead of -32603, the accept loop says so in one log line per
    interval instead of a traceback per attempt (asyncio's loop wrote thousands a second),
    and once the connections go the daemon accepts and dispatches again."""
    data = tmp_path / "data"
    proc, url = start_with_fd_limit(root, data, loop)
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    held: list[asyncio.StreamWriter] = []
    try:
        rpc = await open_rpc(url)
        for _ in range(FD_LIMIT + 40):
            held.append((await asyncio.open_connection(host, int(port)))[1])
        await until(lambda: open_fds(proc.pid) >= FD_LIMIT, "the daemon to run out of fds")
        log = data.parent / "data-stderr.log"
        await until(lambda: "backend.out_of_descriptors" in log.read_text(), "the shortage said")
        ids = iter(range(1000))

        async def refused() -> dict[str, Any] | None:
            # The catalog looks at the flow folders once a second, which takes a descriptor:
            # the first dispatch after that runs out; the others in between need none.
            event = {"id": f"emfile-{next(ids)}", "type": "nothing.wants.this"}
            reply = await rpc.reply(await rpc.send("flow.dispatch", event))
            found: dict[str, Any] | None = reply.get("error")
            return found

        error = await until(refused, "a dispatch to run out of descriptors")
        assert error["code"] == -32001 and error["data"]["reason"] == "out_of_descriptors"
        # Events a flow wants, while out of descriptors: each is refused, or accepted and its
        # run ends (it may fail to start) — the run queue, and the daemon, live on.
        accepted = []
        for n in range(5):
            event = {"id": f"emfile-run-{n}", "type": "demo.event"}
            reply = await rpc.reply(await rpc.send("flow.dispatch", event))
            if "result" in reply:
                accepted += reply["result"]["runIds"]
        for writer in held:
            writer.close()
        held.clear()
        await until(lambda: open_fds(proc.pid) < FD_LIMIT - 10, "the daemon to let them go")
        again = await open_rpc(url)
        reply = await again.call("flow.dispatch", {"id": "emfile-after", "type": "demo.event"})
        assert reply["status"] == "accepted"
        assert proc.poll() is None, "the daemon died"
        for run_id in accepted + reply["runIds"]:

            async def ended(run_id: str = run_id) -> bool:
                run = (await again.call("flow.getRun", {"runId": run_id}))["run"]
                return run["status"] in ("completed", "failed")

            await until(ended, f"run {run_id} to end")
        await again.ws.close()
        await rpc.ws.close()
    finally:
        for writer in held:
            writer.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    log = (tmp_path / "data-stderr.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    said = [line for line in log.splitlines() if "backend.out_of_descriptors" in line]
    assert 1 <= len(said) <= 2, said
    assert len(log.splitlines()) < 300, f"{len(log.splitlines())} log lines"


# --- item 8: memory goes back after clients come and go ------------------------------------------


async def come_and_go(url: str, count: int) -> None:
    """``count`` clients at once, each connecting, making one call and leaving."""

    async def one() -> None:
        rpc = await open_rpc(url)
        assert "runs" in await rpc.call("flow.listRuns", {"limit": 1})
        await rpc.ws.close()

    await asyncio.gather(*(one() for _ in range(count)))


def memory_returns(backend: Backend, since: int = 0) -> list[dict[str, Any]]:
    """The daemon's ``backend.memory_returned`` lines logged past offset ``since``."""
    return [
        json.loads(line)
        for line in backend.stderr()[since:].splitlines()
        if '"backend.memory_returned"' in line
    ]


async def test_memory_goes_back_after_clients_leave(root: Path, tmp_path: Path) -> None:
    """600 clients that come (200 at a time), make a call and leave: once they are gone the
    daemon hands its freed heap back and its RSS is within 10 MB of idle (it stayed 16 MB above
    before: each closed session waited in a reference cycle for the collector)."""
    backend = Backend(root, tmp_path / "data", "--log-level", "debug").start()
    try:
        await come_and_go(backend.url, 20)  # what the first clients load stays loaded
        idle = backend.rss_kib()
        for _ in range(3):
            await come_and_go(backend.url, 200)
        # The daemon hands memory back a second after the last client left: after this point.
        since = len(backend.stderr())
        returned = await until(lambda: memory_returns(backend, since), "the memory handed back")
        grown = backend.rss_kib() - idle
    finally:
        assert backend.stop() == 0
    assert returned[-1]["rss_kib_after"] < returned[-1]["rss_kib_before"], returned
    assert grown < 10 * 1024, f"RSS stayed {grown / 1024:.1f} MB above idle"


def test_the_cli_follows_next_cursor_to_its_limit(edge: Backend) -> None:
    """`workspace flow-runs --limit N` gives N runs even when the backend cuts its replies at
    4 MiB: the CLI passes ``nextCursor`` back until it has them."""
    insert_fat_runs(
        edge.data_dir / "backend.sqlite", "fat-cli", count=8, tail=1_000_000, prefix="run_cli"
    )
    argv = ["--backend-url", edge.url, "flow-runs", "--event-id", "fat-cli", "--limit", "7"]
    done = subprocess.run(
        [str(WORKSPACE), *argv, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    assert [r["id"] for r in runs] == [f"run_cli_{i}" for i in reversed(range(1, 8))]


def test_the_daemon_runs_on_the_system_allocator_under_its_own_pid(edge: Backend) -> None:
    """`workspace backend` re-executes itself once with PYTHONMALLOC=malloc (Python's own
    allocator kept ~20 MB pinned after 2,000 clients left), keeping the pid a supervisor knows."""
    environ = Path(f"/proc/{edge.pid}/environ").read_bytes().split(b"\0")
    assert b"PYTHONMALLOC=malloc" in environ
    cmdline = Path(f"/proc/{edge.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:3] == [b"-m", b"workspace_adapter"] and b"backend" in cmdline
