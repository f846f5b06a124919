"""The appServer.* pass-through against a stand-in app-server on a loopback port.

Replays protocol_probes.json's ``appServer_*`` probes and checks what appserver_frames.json
recorded the backend saying to the app-server (initialize, then initialized).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
from compat.conftest import THREADS, StandInAppServer, fixture
from support.backend import WORKSPACE, dead_url, running_backend
from support.flows import write_flows
from support.wire import Rpc, http, open_rpc

from workspace_adapter.commands import doctor

PROBES = fixture("protocol_probes.json")["probes"]
RECORDED = fixture("appserver_frames.json")["frames"]


def probe(name: str) -> dict[str, Any]:
    sent: dict[str, Any] = json.loads(PROBES[name]["sent"])
    return sent


async def ask(rpc: Rpc, name: str) -> dict[str, Any]:
    """Send protocol_probes.json's ``name`` probe (with our next id); its reply."""
    sent = probe(name)
    return await rpc.reply(await rpc.send(sent["method"], sent.get("params")))


def recorded_reply(name: str) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(PROBES[name]["received"][-1])
    return reply


def closed_event(params: dict[str, Any], kind: str) -> bool:
    return bool(params["event"]["type"] == kind)


async def test_pass_through_reaches_every_client_and_reconnects(tmp_path: Path) -> None:
    stand_in = await StandInAppServer().start()
    root = write_flows(tmp_path / "ws")
    with running_backend(root, tmp_path / "data", "--app-server-url", stand_in.url) as backend:
        with anyio.fail_after(20):
            await stand_in.initialized.wait()
        # As codex-flows: initialize (experimentalApi) first, then the initialized notification.
        theirs = json.loads(RECORDED[1]["frame"])
        first, second = stand_in.received[:2]
        assert first["method"] == theirs["method"] == "initialize"
        assert first["params"]["clientInfo"]["name"] == "workspace-adapter-backend"
        assert first["params"]["capabilities"] == theirs["params"]["capabilities"]
        assert (
            second
            == json.loads(RECORDED[3]["frame"])
            == {
                "jsonrpc": "2.0",
                "method": "initialized",
            }
        )

        a, b = await open_rpc(backend.url), await open_rpc(backend.url)
        init = await a.call("workspace.initialize", {})
        assert init["capabilities"]["appServerPassThrough"] is True

        # appServer_call_ok: the app-server's result, verbatim.
        reply = await ask(a, "appServer_call_ok")
        assert reply["result"] == recorded_reply("appServer_call_ok")["result"] == THREADS

        # appServer_call_triggers_notification_and_request: both reach every client.
        reply = await ask(a, "appServer_call_triggers_notification_and_request")
        assert reply["result"] == {"triggered": True}
        recorded = [
            json.loads(f)
            for f in PROBES["appServer_call_triggers_notification_and_request"]["received"][:2]
        ]
        for client in (a, b):
            note = await client.note("appServer.notification")
            assert note == recorded[0]
            request = await client.note("appServer.request")
            assert request == recorded[1]

        for name in ("appServer_respond", "appServer_respondError", "appServer_notify_request"):
            assert (await ask(a, name))["result"] == {"ok": True} == recorded_reply(name)["result"]
        with anyio.fail_after(10):
            answered = await stand_in.wait_for(id=900)
            refused = await stand_in.wait_for(id=901)
            await stand_in.wait_for(method="probe/notified2")
        assert answered["result"] == {"decision": "accept"}
        assert refused["error"] == {"code": -32000, "message": "denied", "data": {"why": "probe"}}

        # An app-server error comes back as our error reply, naming it.
        error = (await ask(a, "appServer_call_upstream_error"))["error"]
        assert error["code"] == recorded_reply("appServer_call_upstream_error")["error"]["code"]
        assert "fake: unknown method no/such" in error["message"]
        assert error["data"]["appServerError"]["code"] == -32601
        # codex-flows' param checks, codex-flows' words first, then the field.
        for name in (
            "appServer_call_bad_params",
            "appServer_notify_request_bad",
            "appServer_respond_bad",
            "appServer_respondError_bad",
        ):
            theirs_error = recorded_reply(name)["error"]
            ours = (await ask(a, name))["error"]
            assert ours["code"] == theirs_error["code"] == -32602
            assert ours["message"].startswith(theirs_error["message"]), ours

        # The app-server goes away: every client hears appServer.closed; calls say unreachable.
        port = stand_in.port
        await stand_in.stop()
        for client in (a, b):
            closed = await client.note(
                "workspace.event", lambda p: closed_event(p, "appServer.closed")
            )
            assert isinstance(closed["params"]["event"]["code"], int)
            assert closed["params"]["event"]["at"].endswith("Z")
        error = (await ask(a, "appServer_call_ok"))["error"]
        assert "unreachable" in error["message"] and error["data"]["url"] == stand_in.url
        status, ready = http("GET", backend.http + "/readyz")
        assert status == 200 and ready["ok"] is True
        assert ready["appServer"]["connected"] is False and ready["appServer"]["error"]

        # It comes back on the same port: the backend reconnects by itself and says so.
        back = await StandInAppServer(port).start()
        try:
            with anyio.fail_after(30):
                await back.initialized.wait()
            await a.note("workspace.event", lambda p: closed_event(p, "appServer.connected"))
            assert back.received[0]["method"] == "initialize"  # again, on every connection
            assert (await ask(a, "appServer_call_ok"))["result"] == THREADS
            status, ready = http("GET", backend.http + "/readyz")
            assert ready["appServer"] == {"url": back.url, "connected": True}
        finally:
            await a.ws.close()
            await b.ws.close()
            await back.stop()


async def test_an_unreachable_app_server_does_not_stop_the_backend(tmp_path: Path) -> None:
    root = write_flows(tmp_path / "ws")
    url = dead_url()
    with running_backend(root, tmp_path / "data", env={"CODEX_WORKSPACE_APP_SERVER_WS_URL": url}):
        pass  # started and listened: codex-flows exits 1 here (backend_startup.json)
    with running_backend(root, tmp_path / "data", "--app-server-url", url) as backend:
        status, ready = http("GET", backend.http + "/readyz")
        assert status == 200 and ready["ok"] is True
        assert ready["appServer"]["url"] == url and ready["appServer"]["connected"] is False
        rpc = await open_rpc(backend.url)
        error = (await ask(rpc, "appServer_call_ok"))["error"]
        assert "unreachable" in error["message"] and url in error["message"]
        # workspace doctor says so.
        report = doctor._Report()
        doctor._check_app_server(report, backend.url)
        [check] = [c for c in report.checks if c.check == "app-server"]
        assert check.status == "warn" and url in check.message
        # Flows go on.
        done = await rpc.call("flow.dispatch", {"event": {"id": "e-down", "type": "demo.event"}})
        assert done["status"] == "accepted"
        await rpc.ws.close()


async def test_without_an_url_app_server_methods_are_unknown(tmp_path: Path) -> None:
    root = write_flows(tmp_path / "ws")
    with running_backend(root, tmp_path / "data") as backend:
        rpc = await open_rpc(backend.url)
        init = await rpc.call("workspace.initialize", {})
        assert init["capabilities"]["appServerPassThrough"] is False
        assert (await ask(rpc, "appServer_call_ok"))["error"]["code"] == -32601
        status, ready = http("GET", backend.http + "/readyz")
        assert status == 200 and "appServer" not in ready
        await rpc.ws.close()


def test_local_app_server_is_refused_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(WORKSPACE), "backend", "--local-app-server", "--port", "0", "--cwd", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--app-server-url" in done.stderr
