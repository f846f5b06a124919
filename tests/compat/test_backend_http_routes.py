"""http_routes.json: every recorded HTTP exchange, replayed against our backend, gets a reply of
the recorded shape (status, content type, and every key codex-flows sends). Where codex-flows
answered 500 (a handler that threw on bad input), ours is a 400/404 with a JSON error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from compat.conftest import fixture, scenario_workspace
from support.backend import running_backend
from support.wire import http

EXCHANGES: dict[str, Any] = fixture("http_routes.json")["exchanges"]
SECRET = "s3cret"  # captureEnv.secretBackend


def covers(ours: Any, theirs: Any, where: str = "$") -> None:
    """Every key codex-flows sent is in ours, recursively (first element of lists)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), where
        for key, value in theirs.items():
            assert key in ours, f"{where}.{key} missing in {ours}"
            if ours[key] is not None:
                covers(ours[key], value, f"{where}.{key}")
    elif isinstance(theirs, list) and theirs and isinstance(ours, list) and ours:
        covers(ours[0], theirs[0], f"{where}[0]")


def replay(base: str, name: str, run_id: str) -> tuple[int, Any, str]:
    request = EXCHANGES[name]["request"]
    url = urlsplit(request["url"])
    path = url.path.replace("run_a9a8fc249a79", run_id)
    target = f"{base}{path}" + (f"?{url.query}" if url.query else "")
    body = request["body"].encode() if request["body"] is not None else None
    status, answer = http(request["method"], target, body, dict(request["headers"]))
    return status, answer, "application/json" if not isinstance(answer, str) else "text/plain"


def check(name: str, status: int, answer: Any, kind: str) -> None:
    theirs = EXCHANGES[name]["response"]
    if theirs["status"] == 500:  # not a contract: ours is stricter
        assert status in (400, 404) and isinstance(answer, dict) and "error" in answer, name
        return
    assert status == theirs["status"], (name, status, answer)
    assert theirs["contentType"].startswith(kind), (name, kind)
    if kind == "application/json":
        covers(answer, json.loads(theirs["body"]), name)


def test_recorded_http_exchanges_get_the_recorded_shapes(tmp_path: Path) -> None:
    root = scenario_workspace(tmp_path)
    plain = [n for n in EXCHANGES if not n.startswith("secret_")]
    signed = [n for n in EXCHANGES if n.startswith("secret_")]
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    with running_backend(root, tmp_path / "data") as backend:
        run_id = ""
        for name in plain:
            status, answer, kind = replay(backend.http, name, run_id)
            check(name, status, answer, kind)
            if name == "post_events_no_secret":
                run_id = answer["runIds"][0]
            if name == "post_events_duplicate":
                assert answer["status"] == "duplicate" and answer["matched"] == 0
            if name == "get_runs_eventId_echo":
                assert answer["eventId"] == "http-evt-1"
            if name == "get_event":
                assert answer["event"]["raw"]["payload"] == {"name": "Http"}
    with running_backend(
        root, tmp_path / "data-secret", "--secret-file", str(secret_file)
    ) as backend:
        for name in signed:
            check(name, *replay(backend.http, name, ""))
