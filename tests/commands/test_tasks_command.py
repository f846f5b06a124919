"""``workspace tasks``: kind, schedule, last run and next due, read without writing a file."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import pytest

from workspace_adapter.base.globals import Globals
from workspace_adapter.cli import main
from workspace_adapter.commands import tasks, tick

MakeWorkspace = Callable[[str], Globals]

TOML = """
[workspace]
name = "list"

[[workspace.tasks]]
id = "once"
kind = "command"
command = ["true"]

[[workspace.tasks]]
id = "hourly"
kind = "command"
command = ["true"]
schedule = "0 * * * *"

[[workspace.tasks]]
id = "off"
kind = "command"
command = ["true"]
schedule = "0 * * * *"
enabled = false

[[workspace.tasks]]
id = "greet"
kind = "flow"
flow = "demo"
description = "say hello"
schedule = "30 * * * *"
"""

T0 = dt.datetime(2026, 12, 1, 10, 5, tzinfo=dt.UTC)


def listed(g: Globals, capsys: pytest.CaptureFixture[str], now: dt.datetime) -> dict[str, dict]:
    assert tasks.tasks(g, as_json=True, now=now) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["timezone"] == "UTC" and document["now"] == "2026-12-01T" + (
        now.strftime("%H:%M:%S.000Z")
    )
    return {row["taskId"]: row for row in document["tasks"]}


def test_a_fresh_workspace_lists_every_task_and_writes_nothing(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace(TOML)
    rows = listed(g, capsys, T0)
    assert list(rows) == ["once", "hourly", "off", "greet"]
    assert rows["once"] == {
        "taskId": "once",
        "kind": "command",
        "enabled": True,
        "description": None,
        "schedule": None,
        "catchup": "latest",
        "lastRun": None,
        "due": False,
        "nextDue": None,
        "action": None,
        "reason": None,
    }
    # Never ticked: the first tick records a baseline, so the next slot is the first run.
    assert (rows["hourly"]["action"], rows["hourly"]["nextDue"]) == (
        "baseline",
        "2026-12-01T11:00:00.000Z",
    )
    assert (rows["off"]["action"], rows["off"]["nextDue"]) == ("disabled", None)
    assert rows["greet"]["kind"] == "flow" and rows["greet"]["description"] == "say hello"
    assert rows["greet"]["nextDue"] == "2026-12-01T10:30:00.000Z"
    assert not (g.workspace_root / ".workspace").exists()


def test_last_run_and_due_follow_the_state_and_the_clock(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace(TOML)
    assert main(["--workspace-root", str(g.workspace_root), "run", "once"]) == 0
    assert tick.tick(g, now=T0) == 0  # baselines: nothing runs
    capsys.readouterr()
    rows = listed(g, capsys, T0)
    assert rows["once"]["lastRun"]["status"] == "completed"
    assert rows["once"]["lastRun"]["finishedAt"] is not None
    assert (rows["hourly"]["action"], rows["hourly"]["due"]) == ("idle", False)
    assert rows["hourly"]["nextDue"] == "2026-12-01T11:00:00.000Z"
    later = listed(g, capsys, T0 + dt.timedelta(hours=2))
    assert (later["hourly"]["action"], later["hourly"]["due"]) == ("run", True)
    assert later["hourly"]["nextDue"] == "2026-12-01T12:00:00.000Z"  # catchup latest: 12:00
    assert later["off"]["nextDue"] is None


def test_the_table_says_it_in_words(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace(TOML)
    assert main(["--workspace-root", str(g.workspace_root), "run", "once"]) == 0
    capsys.readouterr()
    assert tasks.tasks(g, now=T0) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["TASK", "KIND", "SCHEDULE", "LAST", "RUN", "NEXT", "DUE"]
    by_id = {line.split()[0]: line for line in lines}
    assert "completed 20" in by_id["once"] and "not scheduled" in by_id["once"]
    assert by_id["hourly"].endswith("2026-12-01 11:00 UTC (after the first tick)")
    assert by_id["off"].endswith("disabled") and "never" in by_id["off"]


def test_a_workspace_without_tasks_or_config(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    g = make_workspace('[workspace]\nname = "empty"\n')
    assert tasks.tasks(g) == 0
    assert capsys.readouterr().out.startswith("no tasks in ")
    (g.workspace_root / "workspace.toml").unlink()
    assert main(["--workspace-root", str(g.workspace_root), "tasks"]) == 2
    assert "no workspace.toml" in capsys.readouterr().err
