"""The HTTP routes on the daemon's one port, with a secret configured."""

from __future__ import annotations

import json
import uuid
from typing import Any

from support.backend import SECRET, Backend
from support.waiting import wait_until
from support.wire import http

from workspace_adapter.protocol import sign_body


def signed_post(
    backend: Backend, path: str, event: Any, header: str = "x-flow-signature-256"
) -> tuple[int, Any]:
    body = json.dumps(event).encode() if not isinstance(event, bytes) else event
    headers = {header: sign_body(SECRET, body), "content-type": "application/json"}
    return http("POST", backend.http + path, body, headers)


def test_health_and_ready(backend: Backend) -> None:
    assert http("GET", backend.http + "/healthz") == (200, {"ok": True})
    assert http("GET", backend.http + "/readyz") == (200, {"ok": True})


def test_signed_post_is_accepted(backend: Backend) -> None:
    event_id = f"http-{uuid.uuid4().hex[:8]}"
    status, body = signed_post(backend, "/events", {"id": event_id, "type": "demo.event"})
    assert status == 202 and body["status"] == "accepted" and body["matched"] == 1
    status, again = signed_post(
        backend,
        "/flow-events",
        {"id": event_id, "type": "demo.event"},
        "x-patch-flow-signature-256",
    )
    assert status == 202 and again["status"] == "duplicate" and again["runIds"] == body["runIds"]
    run_id = body["runIds"][0]

    def finished_run() -> dict[str, Any] | None:
        status, shown = http("GET", f"{backend.http}/runs/{run_id}")
        assert status == 200
        run: dict[str, Any] = shown["run"]
        return run if run["status"] == "completed" else None

    run = wait_until(finished_run, f"run {run_id} to complete")
    assert run["id"] == run_id and run["resultStatus"] == "completed"
    status, shown = http("GET", f"{backend.http}/events/{event_id}")
    assert status == 200 and shown["event"]["id"] == event_id and len(shown["runs"]) == 1
    status, listed = http("GET", f"{backend.http}/runs?eventId={event_id}&limit=5")
    assert status == 200 and [r["id"] for r in listed["runs"]] == [run_id]
    status, events = http("GET", f"{backend.http}/events?type=demo.event&limit=100")
    assert status == 200 and event_id in [e["id"] for e in events["events"]]


def test_bad_signatures_are_401(backend: Backend) -> None:
    body = json.dumps({"id": "sig-1", "type": "demo.event"}).encode()
    assert http("POST", backend.http + "/events", body)[0] == 401
    wrong = {"x-flow-signature-256": sign_body("not-the-secret", body)}
    assert http("POST", backend.http + "/events", body, wrong)[0] == 401
    tampered = {"x-flow-signature-256": sign_body(SECRET, body + b" ")}
    assert http("POST", backend.http + "/events", body, tampered)[0] == 401
    status, _ = http("GET", backend.http + "/events/sig-1")
    assert status == 404


def test_bad_input_is_400_never_500(backend: Backend) -> None:
    status, body = signed_post(backend, "/events", b"{not json")
    assert status == 400 and "JSON" in body["error"]
    status, body = signed_post(backend, "/events", b"[1, 2]")
    assert status == 400
    status, body = signed_post(backend, "/events", {"type": "demo.event"})
    assert status == 400 and body["field"] == "event.id"
    status, body = signed_post(backend, "/events", {"id": "no-type"})
    assert status == 400 and body["field"] == "event.type"
    status, body = http("GET", backend.http + "/runs?limit=lots")
    assert status == 400 and body["field"] == "limit"
    status, body = http("GET", backend.http + "/runs?status=sleeping")
    assert status == 400 and body["field"] == "status"
    assert http("GET", backend.http + "/runs/run_missing")[0] == 404
    assert signed_post(backend, "/events/missing/replay", b"")[0] == 404
    assert http("POST", backend.http + "/events/missing/replay")[0] == 401  # unsigned


def test_replay_and_cancel_routes(backend: Backend) -> None:
    event_id = f"http-nap-{uuid.uuid4().hex[:8]}"
    status, body = signed_post(backend, "/events", {"id": event_id, "type": "sleep.event"})
    assert status == 202
    run_id = body["runIds"][0]
    status, canceled = http("POST", f"{backend.http}/runs/{run_id}/cancel")
    assert status == 200 and canceled["run"]["status"] == "canceled"
    status, replay = signed_post(backend, f"/events/{event_id}/replay", b"")
    assert status == 202 and replay["runIds"][0].endswith("_replay")
    status, canceled = http("POST", f"{backend.http}/runs/{replay['runIds'][0]}/cancel")
    assert status == 200 and canceled["run"]["status"] == "canceled"
    assert http("POST", f"{backend.http}/runs/run_missing/cancel")[0] == 404


def test_browser_origins_are_refused(backend: Backend) -> None:
    status, body = http("GET", backend.http + "/runs", headers={"Origin": "https://evil.example"})
    assert status == 403 and "origin" in body["error"]


def test_an_oversized_body_is_413_and_not_stored(backend: Backend) -> None:
    from http.client import HTTPConnection

    event_id = f"http-huge-{uuid.uuid4().hex[:8]}"
    host, port = backend.http.removeprefix("http://").rsplit(":", 1)
    # A Content-Length over the limit is refused from the header alone, before any body is
    # sent (sending the body too would race the server's close: EPIPE on a loaded machine).
    conn = HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/events")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(2 << 20))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and b"larger than" in response.read()
    conn.close()
    # Without a Content-Length (chunked), the limit holds while the body is read: the server
    # answers 413 once past 1 MiB and drops the connection, which a client still writing may
    # see as a reset instead of the answer. Either way nothing is stored.
    conn = HTTPConnection(host, int(port), timeout=10)
    chunks = (b'{"id":"' + event_id.encode() + b'","type":"demo.event","p":"' + b"a" * 65536,)
    try:
        conn.request("POST", "/events", body=iter(chunks * 40), encode_chunked=True)
        outcome: int | str = conn.getresponse().status
    except (BrokenPipeError, ConnectionResetError):
        outcome = "reset"
    assert outcome in (413, "reset")
    conn.close()
    assert http("GET", f"{backend.http}/events/{event_id}")[0] == 404
    assert http("GET", backend.http + "/healthz")[0] == 200
