"""protocol_probes.json's ``notification_*`` probes (and a few of ours): a notification (no id)
is never answered, whatever its method or params."""

from __future__ import annotations

from pathlib import Path

from compat.conftest import fixture
from support.backend import running_backend
from support.flows import write_flows
from support.wire import open_rpc

PROBES = fixture("protocol_probes.json")["probes"]
RECORDED = [PROBES[name]["sent"] for name in PROBES if name.startswith("notification_")]
OURS = [
    '{"jsonrpc":"2.0","method":"flow.getRun","params":{}}',
    '{"jsonrpc":"2.0","method":"flow.getRun","params":[1,2]}',
    '{"jsonrpc":"2.0","method":"workspace.initialize"}',
    '{"jsonrpc":"2.0","method":"appServer.call","params":{"method":"thread/list"}}',
]


async def test_notifications_are_never_answered(tmp_path: Path) -> None:
    assert len(RECORDED) == 4
    root = write_flows(tmp_path / "ws")
    with running_backend(root, tmp_path / "data") as backend:
        peer = await open_rpc(backend.url)
        other = await open_rpc(backend.url)
        for frame in RECORDED + OURS:
            await peer.ws.send(frame)
        # Requests after them: an answer to them would come before these replies (a dispatch
        # goes through the store writer behind the notification's own dispatch).
        await peer.call("workspace.initialize", {})
        await peer.call("flow.dispatch", {"event": {"id": "after-notes", "type": "none.match"}})
        assert not peer.replies, peer.replies  # nothing but the requests' replies came back
        assert all("id" not in n and n["method"] != "error" for n in peer.notes), peer.notes
        # The other peer heard no answer either.
        await other.reply(await other.send("workspace.initialize", {}))
        assert not other.replies
        await peer.ws.close()
        await other.ws.close()
