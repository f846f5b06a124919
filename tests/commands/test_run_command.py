"""``workspace run``: real subprocesses, a real state database, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.waiting import wait_until

from workspace_adapter.base.globals import Globals
from workspace_adapter.base.times import parse_iso
from workspace_adapter.cli import main
from workspace_adapter.local import configfile, state, taskrun, taskruns
from workspace_adapter.local.state import StateStore

MakeWorkspace = Callable[[str], Globals]

RUN_KEYS = {
    "id",
    "taskId",
    "kind",
    "status",
    "reason",
    "startedAt",
    "finishedAt",
    "exitCode",
    "stdoutTail",
    "stderrTail",
    "eventId",
    "runIds",
    "slot",
}


def cli(root: Path, *argv: str) -> int:
    return main(["--workspace-root", str(root), *argv])


def runs_of(root: Path, task_id: str | None = None) -> list[taskruns.TaskRun]:
    return StateStore.for_workspace(root, "local").open().runs(task_id)


def command_task(task_id: str, argv: list[str], extra: str = "") -> str:
    return (
        f'[[workspace.tasks]]\nid = "{task_id}"\nkind = "command"\n'
        f"command = {json.dumps(argv)}\n{extra}\n"
    )


def test_a_task_that_exits_3_is_failed(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + command_task("three", ["bash", "-c", "echo out; exit 3"]))
    assert cli(g.workspace_root, "run", "three") == 1
    captured = capsys.readouterr()
    assert "out" in captured.out
    assert "three: failed: exited with code 3" in captured.err
    [record] = runs_of(g.workspace_root, "three")
    assert (record.status, record.reason, record.exit_code) == ("failed", "exited with code 3", 3)
    assert record.stdout_tail == "out\n"
    assert record.finished_at is not None


def test_a_timeout_kills_the_whole_process_group(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    script = "sleep 60 & echo $! > child.pid; echo started; wait"
    g = make_workspace(
        "[workspace]\n" + command_task("slow", ["bash", "-c", script], 'timeout = "1s"')
    )
    began = time.monotonic()
    assert cli(g.workspace_root, "run", "slow") == 1
    assert time.monotonic() - began < 10
    [record] = runs_of(g.workspace_root, "slow")
    assert record.status == "failed"
    assert record.reason == "timed out after 1s; process group killed"
    child = int((g.workspace_root / "child.pid").read_text())
    assert not state.process_alive(child, None), "the task's child outlived the timeout"
    assert record.stdout_tail == "started\n"


def test_sigterm_to_run_kills_the_task_group_and_records_it_interrupted(
    make_workspace: MakeWorkspace,
) -> None:
    script = "sleep 60 & echo $!; wait"
    g = make_workspace("[workspace]\n" + command_task("slow", ["bash", "-c", script]))
    command = [sys.executable, "-m", "workspace_adapter", "--workspace-root", str(g.workspace_root)]
    proc = subprocess.Popen(
        [*command, "run", "slow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    # The task's output is streamed live: its first line says the child is running.
    child = int(proc.stdout.readline())
    proc.terminate()
    assert proc.wait(30) == 143
    wait_until(lambda: not state.process_alive(child, None), "the task to end with `workspace run`")
    [record] = runs_of(g.workspace_root, "slow")
    assert (record.status, record.reason) == ("failed", "interrupted")
    assert record.finished_at is not None


def test_a_detached_process_holding_the_output_does_not_hang_the_run(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    script = "setsid sleep 60 & echo $! > daemon.pid; echo hi"
    g = make_workspace("[workspace]\n" + command_task("d", ["bash", "-c", script]))
    began = time.monotonic()
    try:
        assert cli(g.workspace_root, "run", "d") == 0
        assert time.monotonic() - began < 10
    finally:
        daemon = int((g.workspace_root / "daemon.pid").read_text())
        os.kill(daemon, 15)
    [record] = runs_of(g.workspace_root, "d")
    assert (record.status, record.stdout_tail) == ("completed", "hi\n")
    assert "a detached process still holds the task's output" in capsys.readouterr().err


def test_a_missing_program_is_failed(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + command_task("ghost", ["no-such-program-4c1d"]))
    assert cli(g.workspace_root, "run", "ghost", "--json") == 1
    record = json.loads(capsys.readouterr().out)
    assert record["status"] == "failed"
    assert record["reason"] == "program not found: no-such-program-4c1d (not on PATH)"
    assert runs_of(g.workspace_root)[0].status == "failed"


def test_a_signal_is_failed(make_workspace: MakeWorkspace) -> None:
    g = make_workspace("[workspace]\n" + command_task("sig", ["bash", "-c", "kill -TERM $$"]))
    assert cli(g.workspace_root, "run", "sig") == 1
    assert runs_of(g.workspace_root)[0].reason == "killed by signal SIGTERM"


def test_json_prints_the_run_record_and_child_output_goes_to_stderr(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    script = 'echo "$CODEX_WORKSPACE_MODE $CODEX_WORKSPACE_ROOT $GREETING"; command -v workspace'
    g = make_workspace(
        "[workspace]\n" + command_task("env", ["bash", "-c", script], 'env = { GREETING = "hi" }')
    )
    assert cli(g.workspace_root, "run", "env", "--json") == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert set(record) == RUN_KEYS
    assert record["status"] == "completed" and record["exitCode"] == 0
    bin_dir = os.path.dirname(sys.executable)
    expected = f"local {g.workspace_root} hi\n{bin_dir}/workspace\n"
    assert record["stdoutTail"] == expected
    assert expected in captured.err


def test_the_tail_keeps_the_last_64_kib(make_workspace: MakeWorkspace) -> None:
    script = "head -c 100000 /dev/zero | tr '\\0' a; printf END; printf E >&2"
    g = make_workspace("[workspace]\n" + command_task("big", ["bash", "-c", script]))
    assert cli(g.workspace_root, "run", "big", "--json") == 0
    record = runs_of(g.workspace_root)[0]
    assert len(record.stdout_tail) == 64 * 1024
    assert record.stdout_tail.endswith("aaaEND")
    assert record.stderr_tail == "E"


def test_unknown_task_exits_2_listing_known_ids(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + command_task("a", ["true"]) + command_task("b", ["true"]))
    assert cli(g.workspace_root, "run", "nope") == 2
    assert "no task 'nope'; known tasks: a, b" in capsys.readouterr().err


def test_a_disabled_task_is_recorded_skipped(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + command_task("off", ["touch", "ran"], "enabled = false"))
    assert cli(g.workspace_root, "run", "off") == 0
    assert "skipped" in capsys.readouterr().err
    record = runs_of(g.workspace_root)[0]
    assert (record.status, record.reason) == ("skipped", "disabled")
    assert not (g.workspace_root / "ran").exists()


FLOW_TASK = """
[workspace]
name = "patch.moi"
[[workspace.tasks]]
id = "harness-flow"
kind = "flow"
flow = "upstream.release"
[workspace.tasks.event]
source = "patch.moi.workspace"
[workspace.tasks.event.payload]
repo = "peezy-tech/patch-moi-harness"
tag = "v0.1.3"
"""


def test_a_flow_task_with_no_backend_exits_4_and_is_recorded_failed(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace(FLOW_TASK)
    root = str(g.workspace_root)
    code = main(
        ["--workspace-root", root, "--backend-url", g.backend_url, "run", "harness-flow", "--json"]
    )
    assert code == 4
    captured = capsys.readouterr()
    assert f"backend not reachable at {g.backend_url}; start it with `workspace backend`" in (
        captured.err
    )
    record = json.loads(captured.out)
    assert (record["status"], record["reason"]) == ("failed", "backend not reachable")
    assert record["eventId"] == f"workspace:patch.moi:harness-flow:{record['id']}"
    assert runs_of(g.workspace_root)[0].status == "failed"


def test_the_generated_event(make_workspace: MakeWorkspace) -> None:
    g = make_workspace(FLOW_TASK)
    loaded = configfile.load(g.workspace_root)
    task = loaded.task("harness-flow")
    record = taskruns.new_task_run(task.id, task.kind, parse_iso("2026-11-24T23:07:55.864Z"))
    env = {"CODEX_FLOW_FETCH": "0", "CODEX_FLOW_PUSH": "yes"}
    event = taskrun.build_event(loaded, task, record, environ=env)
    assert event == {
        "id": f"workspace:patch.moi:harness-flow:{record.id}",
        "type": "upstream.release",
        "source": "patch.moi.workspace",
        "occurredAt": "2026-11-24T23:07:55.864Z",
        "receivedAt": "2026-11-24T23:07:55.864Z",
        "payload": {
            "taskId": "harness-flow",
            "repo": "peezy-tech/patch-moi-harness",
            "tag": "v0.1.3",
            "options": {"fetch": False, "push": True},
        },
    }
    assert record.id.startswith("2026-11-24T23-07-55-864Z-") and record.id.endswith("-harness-flow")
    override = {"type": "upstream.rehearsal", "payload": {"tag": "v9.9.9"}}
    rehearsed = taskrun.build_event(loaded, task, record, override, environ={})
    assert rehearsed["id"] == event["id"]
    assert rehearsed["type"] == "upstream.rehearsal"
    assert rehearsed["payload"] == {"tag": "v9.9.9", "taskId": "harness-flow"}


def test_a_bad_event_file_exits_2(
    make_workspace: MakeWorkspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace(FLOW_TASK)
    bad = tmp_path / "event.json"
    bad.write_text("[1, 2")
    assert cli(g.workspace_root, "run", "harness-flow", "--event", str(bad)) == 2
    assert f"--event {bad}: invalid JSON" in capsys.readouterr().err
    assert not (g.workspace_root / ".workspace").exists()


def test_a_run_left_by_a_dead_process_is_marked_interrupted(make_workspace: MakeWorkspace) -> None:
    g = make_workspace("[workspace]\n" + command_task("a", ["true"]))
    store = StateStore.for_workspace(g.workspace_root, "local").open()
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = taskruns.new_task_run("a", "command", parse_iso("2026-01-01T00:00:00Z"))
    store.insert(record)
    with store.connect() as db:
        db.execute("UPDATE runs SET pid = ? WHERE id = ?", (dead.pid, record.id))
    assert cli(g.workspace_root, "runs") == 0
    [old] = [r for r in runs_of(g.workspace_root) if r.id == record.id]
    assert (old.status, old.reason) == ("failed", "interrupted")


def test_run_harness_in_a_harness_workspace(
    workspace_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Acceptance: the tutorial's direct path, through `workspace run harness`."""
    (workspace_root / "workspace.toml").write_text(
        (Path(__file__).resolve().parents[2] / "workspace.toml").read_text()
    )
    assert cli(workspace_root, "run", "harness") == 0
    out = capsys.readouterr().out
    [record] = runs_of(workspace_root, "harness")
    assert record.status == "completed", (record.reason, record.stderr_tail[-2000:])
    assert record.stdout_tail and record.stdout_tail in out
    assert cli(workspace_root, "runs") == 0
    listing = capsys.readouterr().out
    assert "harness" in listing and "completed" in listing
