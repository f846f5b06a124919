"""Our CLI against codex-flows' workspace backend (the stand-in in ``support.codex_flows``).

That backend has no ``flow.subscribe`` and no ``flow.cancelRun``: runs are followed by polling
``flow.getRun``, the flow's outcome is read from ``resultJson``, and a duplicate event
(``matched: 0`` plus the existing run ids) is followed through its runs.
"""

from __future__ import annotations

import functools
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from support.codex_flows import CodexFlowsStandIn, Step

from workspace_adapter import following
from workspace_adapter.base.times import parse_iso
from workspace_adapter.cli import main
from workspace_adapter.local import configfile, taskrun, taskruns
from workspace_adapter.local.state import StateStore

# reply_shapes.json "runRecordsByStep": what each kind of step leaves in its run.
RAW_OK = Step("demo", "raw", {"status": "completed", "message": "hello Ada"})
MODULE_CHANGED = Step("demo", "module", {"status": "changed", "message": "module Ada"})
MODULE_THROWS = Step("errors", "module-throws", {"status": "failed", "message": "boom"})
RAW_EXIT_1 = Step("errors", "raw-exit-1", failure="Bun flow step errors/raw-exit-1 failed:")
NEEDS_PERSON = Step("fork", "rebase", {"status": "needs_intervention", "message": "conflict"})

STEPS = {
    "demo.run": [RAW_OK, MODULE_CHANGED],
    "errors.run": [MODULE_THROWS],
    "broken.run": [RAW_EXIT_1],
    "fork.run": [RAW_OK, NEEDS_PERSON],
}

WORKSPACE = """
[workspace]
name = "cfscn"
[[workspace.tasks]]
id = "demo"
kind = "flow"
flow = "demo.run"
timeout = "1m"
[[workspace.tasks]]
id = "errors"
kind = "flow"
flow = "errors.run"
timeout = "1m"
[[workspace.tasks]]
id = "broken"
kind = "flow"
flow = "broken.run"
timeout = "1m"
"""


@pytest.fixture
def standin() -> Iterator[CodexFlowsStandIn]:
    with CodexFlowsStandIn(STEPS) as backend:
        yield backend


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / "workspace.toml").write_text(textwrap.dedent(WORKSPACE), encoding="utf-8")
    return folder


def workspace(url: str, *argv: str, root: Path | None = None) -> int:
    where = ["--workspace-root", str(root)] if root is not None else []
    return main([*where, "--backend-url", url, *argv])


def followed_by_polling(backend: CodexFlowsStandIn) -> None:
    assert "flow.getRun" in backend.calls
    assert not {"flow.subscribe", "flow.cancelRun"} & set(backend.calls)


@pytest.mark.parametrize(
    ("task", "code", "status", "reason"),
    [
        ("demo", 0, "changed", "module Ada"),
        ("errors", 1, "failed", "boom"),
        ("broken", 1, "failed", "flow runner exited with 1"),
    ],
)
def test_run_of_a_flow_task_ends_with_the_status_in_result_json(
    standin: CodexFlowsStandIn,
    root: Path,
    capsys: pytest.CaptureFixture[str],
    task: str,
    code: int,
    status: str,
    reason: str,
) -> None:
    assert workspace(standin.url, "run", task, "--json", root=root) == code
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert (record["status"], record["reason"]) == (status, reason)
    assert record["eventId"] == f"workspace:cfscn:{task}:{record['id']}"
    assert len(record["runIds"]) == len(STEPS[f"{task}.run"])
    assert all(
        standin.run(run_id)["status"] in ("completed", "failed") for run_id in record["runIds"]
    )
    assert "flow.subscribe" not in captured.err
    followed_by_polling(standin)


def test_a_runner_failure_shows_its_stderr(
    standin: CodexFlowsStandIn, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert workspace(standin.url, "run", "broken", root=root) == 1
    captured = capsys.readouterr()
    assert "Bun flow step errors/raw-exit-1 failed:" in captured.err
    assert "errors/raw-exit-1: failed" in captured.out


async def test_run_of_an_event_the_backend_already_has_follows_its_runs(
    standin: CodexFlowsStandIn, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A redelivered event: codex-flows says duplicate with ``matched: 0``, not skipped."""
    config = configfile.load(root)
    task = config.task("demo")
    record = taskruns.new_task_run(task.id, task.kind, parse_iso("2026-12-01T01:11:08.972Z"))
    event = taskrun.build_event(config, task, record, environ={})
    first = await following.dispatch_and_follow(standin.url, event)
    assert (first.status, first.matched) == ("accepted", 2)

    store = StateStore.for_workspace(root, "local").open()
    store.insert(record)
    # A task run follows its runs on its own event loop, as it does from the command line.
    done = await anyio.to_thread.run_sync(
        functools.partial(
            taskrun.execute,
            store,
            config,
            task,
            record,
            mode="local",
            backend_url=standin.url,
            sinks=taskrun.Sinks(sys.stdout, sys.stderr),
        )
    )
    assert done.exit_code == 0, done.message
    assert (done.record.status, done.record.reason) == ("changed", "module Ada")
    assert sorted(done.record.run_ids) == sorted(first.run_ids)
    assert store.runs("demo")[0].status == "changed"
    assert "skipped" not in capsys.readouterr().err


def write_event(tmp_path: Path, event: dict[str, Any]) -> str:
    path = tmp_path / f"{event['id']}.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    return str(path)


def test_dispatch_wait_follows_a_duplicate_to_the_same_status(
    standin: CodexFlowsStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = write_event(tmp_path, {"id": "evt-fork-1", "type": "fork.run"})
    assert workspace(standin.url, "dispatch", event, "--wait", "--json") == 3
    first = json.loads(capsys.readouterr().out)
    assert (first["status"], first["matched"], first["flowStatus"]) == (
        "accepted",
        2,
        "needs_intervention",
    )

    assert workspace(standin.url, "dispatch", event, "--wait", "--json") == 3
    captured = capsys.readouterr()
    again = json.loads(captured.out)
    assert (again["status"], again["matched"], again["flowStatus"]) == (
        "duplicate",
        0,
        "needs_intervention",
    )
    assert sorted(again["runIds"]) == sorted(first["runIds"])
    assert {run["status"] for run in again["runs"]} == {"completed"}
    assert "no flow matched" not in captured.err
    followed_by_polling(standin)

    assert workspace(standin.url, "dispatch", event, "--wait") == 3
    human = capsys.readouterr().out
    assert "dispatched evt-fork-1: duplicate, 2 run(s)" in human
    assert "fork/rebase  needs_intervention" in human


def test_dispatch_of_an_event_no_flow_wants_warns_and_exits_0(
    standin: CodexFlowsStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = write_event(tmp_path, {"id": "evt-none", "type": "nothing.matches"})
    for _ in range(2):  # accepted, then duplicate: no runs either way
        assert workspace(standin.url, "dispatch", event, "--wait") == 0
        assert "warning: no flow matched this event" in capsys.readouterr().err


def test_replay_wait_follows_the_new_runs(
    standin: CodexFlowsStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = write_event(tmp_path, {"id": "evt-replay", "type": "errors.run"})
    assert workspace(standin.url, "dispatch", event) == 0
    capsys.readouterr()
    assert workspace(standin.url, "replay", "evt-replay", "--wait", "--json") == 1
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["flowStatus"] == "failed"
    assert all(run_id.endswith("_replay") for run_id in replayed["runIds"])


def test_cancel_exits_2_naming_the_missing_method(
    standin: CodexFlowsStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = write_event(tmp_path, {"id": "evt-cancel", "type": "demo.run"})
    assert workspace(standin.url, "dispatch", event, "--json") == 0
    run_id = json.loads(capsys.readouterr().out)["runIds"][0]
    assert workspace(standin.url, "cancel", run_id) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: cannot cancel {run_id}: the backend at {standin.url} does not offer "
        "flow.cancelRun\n"
    )
    assert "flow.cancelRun" not in standin.calls


def test_flow_runs_shows_the_result_status_of_codex_flows_runs(
    standin: CodexFlowsStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for event_id, event_type in (("evt-list-1", "demo.run"), ("evt-list-2", "broken.run")):
        event = write_event(tmp_path, {"id": event_id, "type": event_type})
        workspace(standin.url, "dispatch", event, "--wait")
    capsys.readouterr()
    assert workspace(standin.url, "flow-runs") == 0
    lines = capsys.readouterr().out.splitlines()
    shown = {line.split()[3]: line.split()[1:3] for line in lines}
    assert shown == {
        "demo/raw": ["completed", "completed"],
        "demo/module": ["completed", "changed"],
        "errors/raw-exit-1": ["failed", "-"],
    }
    assert workspace(standin.url, "flow-runs", "--event-id", "evt-list-1", "--json") == 0
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert [run["stepName"] for run in listed] == ["module", "raw"]
