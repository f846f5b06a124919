"""A command task's exit codes mapped to statuses (`statuses = { 3 = "needs_intervention" }`).

The `harness` task runs `workspace flow run`, which exits 3 when the flow needs a person; it was
recorded `failed` with exit 1. Each test runs the real CLI (a subprocess for exit codes and
messages) on a real workspace.toml and reads the real state.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workspace_adapter.base import status as status_rule
from workspace_adapter.local import configfile
from workspace_adapter.local.state import StateStore

WORKSPACE = Path(sys.executable).with_name("workspace")
REPO_ROOT = Path(__file__).resolve().parents[2]


def run_task(root: Path, task_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WORKSPACE), "--workspace-root", str(root), "run", task_id],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=60,
    )


def workspace(tmp_path: Path, tasks: str) -> Path:
    root = tmp_path / "ws"
    root.mkdir(exist_ok=True)
    (root / "workspace.toml").write_text(
        '[workspace]\nname = "codes"\n' + textwrap.dedent(tasks), encoding="utf-8"
    )
    return root


def test_a_mapped_exit_code_is_the_runs_status_and_its_exit_code(tmp_path: Path) -> None:
    """Exit 3 mapped to needs_intervention: recorded so, and `workspace run` exits 3.

    Before: `statuses` was an unknown key (exit 2). An unmapped code stays `failed` (exit 1),
    and a timeout is `failed` whatever code the killed task exits with.
    """
    root = workspace(
        tmp_path,
        """
        [[workspace.tasks]]
        id = "needs-person"
        kind = "command"
        command = ["sh", "-c", "echo conflict; exit 3"]
        statuses = { 3 = "needs_intervention", 5 = "skipped" }

        [[workspace.tasks]]
        id = "unmapped"
        kind = "command"
        command = ["sh", "-c", "exit 4"]
        statuses = { 3 = "needs_intervention" }

        [[workspace.tasks]]
        id = "slow"
        kind = "command"
        command = ["sh", "-c", "trap 'exit 3' TERM; echo waiting; sleep 30 & wait"]
        timeout = "1s"
        statuses = { 3 = "completed" }
        """,
    )
    done = run_task(root, "needs-person")
    assert done.returncode == 3, done.stderr
    assert "needs-person: needs_intervention: exited with code 3" in done.stderr
    unmapped = run_task(root, "unmapped")
    assert unmapped.returncode == 1, unmapped.stderr
    slow = run_task(root, "slow")
    assert slow.returncode == 1, slow.stderr
    store = StateStore.for_workspace(root, "local", readonly=True)
    [record] = store.runs("needs-person")
    assert (record.status, record.reason, record.exit_code) == (
        "needs_intervention",
        "exited with code 3",
        3,
    )
    assert record.stdout_tail == "conflict\n"
    [record] = store.runs("unmapped")
    assert (record.status, record.exit_code) == ("failed", 4)
    [record] = store.runs("slow")
    assert record.status == "failed" and record.reason is not None
    assert record.reason.startswith("timed out after 1s")


@pytest.mark.parametrize(
    ("entry", "key_path", "problem"),
    [
        ('{ abc = "failed" }', 'statuses."abc"', "'abc' is not an exit code"),
        ('{ 0 = "completed" }', 'statuses."0"', "'0' is not an exit code"),
        ('{ 256 = "failed" }', 'statuses."256"', "'256' is not an exit code"),
        ('{ 03 = "blocked" }', 'statuses."03"', "'03' is not an exit code"),
        ('{ 3 = "running" }', 'statuses."3"', "'running' is not one of failed, canceled"),
        ('{ 3 = "queued" }', 'statuses."3"', "'queued' is not one of"),
        ('{ 3 = "oops" }', 'statuses."3"', "'oops' is not one of"),
        ("{ 3 = 1 }", 'statuses."3"', "expected a status string, got integer"),
        ('"needs_intervention"', "statuses", "expected object, got str"),
    ],
)
def test_a_bad_statuses_entry_is_one_line_naming_file_line_and_key(
    tmp_path: Path, entry: str, key_path: str, problem: str
) -> None:
    """Every bad `statuses` entry is refused up front: exit 2, one line, file:line: key path."""
    root = workspace(
        tmp_path,
        f"""
        [[workspace.tasks]]
        id = "t"
        kind = "command"
        command = ["true"]
        statuses = {entry}
        """,
    )
    done = run_task(root, "t")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert f"workspace.toml:8: workspace.tasks[0].{key_path}: {problem}" in line, line
    assert not StateStore.for_workspace(root, "local").exists()


def test_statuses_only_apply_to_command_tasks(tmp_path: Path) -> None:
    """A flow task takes its status from its runs: `statuses` there is an error, not ignored."""
    root = workspace(
        tmp_path,
        """
        [[workspace.tasks]]
        id = "f"
        kind = "flow"
        flow = "x.event"
        statuses = { 3 = "blocked" }
        """,
    )
    done = run_task(root, "f")
    assert done.returncode == 2
    assert "workspace.tasks[0].statuses: only applies to command tasks" in done.stderr


def test_the_repositorys_harness_task_maps_what_flow_run_exits_with() -> None:
    """workspace.toml's `harness` task runs `workspace flow run`, which exits with
    `status.exit_code` of the flow's outcome: each mapped code must be the one its status
    exits with (3 for needs_intervention), or the record would say something else."""
    config = configfile.load(REPO_ROOT)
    harness = config.task("harness")
    assert harness.command is not None and harness.command[:3] == ["workspace", "flow", "run"]
    assert dict(harness.statuses) == {3: "needs_intervention"}
    for code, status in harness.statuses.items():
        assert status_rule.exit_code(status) == code
