"""An attempt keeps the patch table of its runs: a real backend runs a one-step flow whose
FLOW_RESULT carries ``artifacts.patches``, the delivery follows it, real SQLite records it."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import anyio
import pytest
from service_helpers import globals_for, write_workspace
from support.backend import running_backend

from workspace_adapter.base.times import iso, utc_now
from workspace_adapter.commands import attempts, show
from workspace_adapter.service.delivery import AttemptDelivery
from workspace_adapter.service.records import Records
from workspace_adapter.service.schema import SeenRelease

PATCHES = [
    {"name": "patch/010-add-numbers", "status": "upstreamed", "reason": "in the release"},
    {
        "name": "patch/020-fork-banner",
        "status": "conflict",
        "files": ["index.js"],
        "hunks": ["index.js:23-25"],
        "upstreamCommits": [{"sha": "ba921f3561c422252bbd6ec82a4c08574b79ba83", "subject": "v2"}],
    },
]
RESULT = {"status": "needs_intervention", "message": "stopped", "artifacts": {"patches": PATCHES}}
FLOW = f"""
    name = "patch-table"
    [[steps]]
    name = "report"
    runner = "command"
    command = ['printf', '%s\\n', 'FLOW_RESULT {json.dumps(RESULT)}']
    [steps.trigger]
    type = "patches.release"
"""


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)


def test_a_delivered_attempt_keeps_its_runs_patch_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`attempts` lists and prints the patches of a run's result, as the records keep them;
    `show` prints them under the run."""
    root = tmp_path / "ws"
    (root / "flows" / "patch-table").mkdir(parents=True)
    (root / "flows" / "patch-table" / "flow.toml").write_text(textwrap.dedent(FLOW))
    write_workspace(root, "")
    records = Records.for_workspace(root).open()
    event = {"id": "patches:v2", "type": "patches.release", "payload": {"tag": "v2"}}
    release = SeenRelease(tag="v2", sha=None, url=None, published_at=None, event=event)
    now = utc_now()
    polled = records.record_poll(
        "up", [release], prime_only=False, repo="o/r", now=now, next_poll_at=iso(now)
    )
    [attempt] = polled.claimed
    with running_backend(root, tmp_path / "backend") as backend:
        delivery = AttemptDelivery(records, backend.url, root, out=io.StringIO())
        done = anyio.run(delivery.deliver, attempt)
        assert (done.status, done.patches) == ("needs_intervention", PATCHES)
        assert records.attempt(attempt.id) == done

        capsys.readouterr()
        g = globals_for(root, backend.url)
        assert attempts.list_attempts(g, None, True) == 0
        [listed] = json.loads(capsys.readouterr().out)["attempts"]
        assert listed["patches"] == PATCHES
        assert attempts.list_attempts(g, None, False) == 0
        line, upstreamed, conflict = capsys.readouterr().out.splitlines()
        assert line.startswith(f"{attempt.id}  needs_intervention")
        assert upstreamed == "  patch   patch/010-add-numbers  upstreamed (in the release)"
        assert conflict.startswith("  patch   patch/020-fork-banner  conflict in index.js with ")

        # `workspace show` of the run prints the same table under the run's summary.
        [run_id] = done.run_ids
        assert show.show(g, run_id) == 0
        shown = capsys.readouterr().out.splitlines()
        assert shown.count(upstreamed) == 1 and shown.count(conflict) == 1
