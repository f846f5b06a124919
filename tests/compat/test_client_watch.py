"""The release watcher against codex-flows' workspace backend (the stand-in).

A redelivered attempt whose event the backend already has gets ``duplicate`` with
``matched: 0`` and the existing run ids: the attempt follows those runs (by polling, there is
no ``flow.subscribe``) and ends with their status from ``resultJson``, not ``skipped``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import anyio
import pytest
from support.backend import dead_url
from support.codex_flows import CodexFlowsStandIn, Step

from workspace_adapter import following
from workspace_adapter.base.globals import Globals
from workspace_adapter.commands import watch
from workspace_adapter.harness import cut_release
from workspace_adapter.service.records import Records

EVENT_V014 = "patch:upstream:v0.1.4:upstream.release"
GIT_SOURCE = """[workspace]
name = "svc"
[[workspace.sources]]
id = "upstream"
kind = "git-tags"
url = "harness/remotes/upstream.git"
repo = "peezy-tech/patch-moi-harness"
tag_pattern = "v\\\\d+\\\\.\\\\d+\\\\.\\\\d+"
interval = "1h"
"""
REF = {"remote": "origin", "ref": "refs/heads/main", "sha": "abc123", "pushed": False}
MAINTAIN = Step(
    "patch-moi-harness",
    "maintain",
    {
        "status": "changed",
        "message": "rebased 3 fork commits",
        "artifacts": {"candidateRefs": [REF]},
    },
)


async def watch_once(root: Path, url: str) -> int:
    """``watch --once``, on its own event loop in a worker thread as from the command line."""
    g = Globals(workspace_root=root, backend_url=url, mode="local", log_level="warning")
    return await anyio.to_thread.run_sync(functools.partial(watch.watch, g, once=True))


def records(root: Path) -> Records:
    return Records.for_workspace(root).open()


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)


async def test_a_redelivered_attempt_follows_the_runs_the_backend_already_has(
    workspace_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = workspace_root
    (root / "workspace.toml").write_text(GIT_SOURCE, encoding="utf-8")
    down = dead_url()
    assert await watch_once(root, down) == 0  # primes
    assert cut_release(root) == "v0.1.4"
    assert await watch_once(root, down) == 4
    [attempt] = records(root).attempts()
    assert attempt.status == "undelivered"
    event = records(root).event(EVENT_V014)
    assert event is not None

    with CodexFlowsStandIn({"upstream.release": [MAINTAIN]}) as backend:
        # The first delivery reached the backend after all (the reply was lost on the way).
        first = await following.dispatch_and_follow(backend.url, event, wait=False)
        assert first.status == "accepted"
        capsys.readouterr()

        assert await watch_once(root, backend.url) == 0
        [done] = records(root).attempts()
        assert done.id == attempt.id
        assert (done.status, done.message) == ("changed", "rebased 3 fork commits")
        assert done.run_ids == first.run_ids
        assert done.run_statuses == {first.run_ids[0]: "changed"}
        assert done.candidate_refs == [REF]
        [*_, sent] = records(root).dispatches(done.id)
        assert (sent["method"], sent["outcome"], sent["matched"]) == (
            "flow.dispatch",
            "duplicate",
            0,
        )
        assert "flow.subscribe" not in backend.calls
        assert f"attempt {done.id} v0.1.4: changed" in capsys.readouterr().out
