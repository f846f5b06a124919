"""``workspace tick``: an injected clock, a real state database, real task subprocesses."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from workspace_adapter.base.globals import Globals
from workspace_adapter.commands.tick import tick
from workspace_adapter.local import taskruns
from workspace_adapter.local.state import StateStore

MakeWorkspace = Callable[[str], Globals]

T0 = dt.datetime(2026, 11, 24, 12, 0, 30, tzinfo=dt.UTC)


def task(task_id: str, schedule: str | None, extra: str = "") -> str:
    sched = f'schedule = "{schedule}"\n' if schedule else ""
    return (
        f'[[workspace.tasks]]\nid = "{task_id}"\nkind = "command"\n'
        f'command = ["bash", "-c", "echo $CODEX_WORKSPACE_MODE >> ran-{task_id}.txt"]\n'
        f"{sched}{extra}\n"
    )


def ran(g: Globals, task_id: str) -> int:
    marker = g.workspace_root / f"ran-{task_id}.txt"
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def records(g: Globals, task_id: str) -> list[taskruns.TaskRun]:
    return StateStore.for_workspace(g.workspace_root, "local").open().runs(task_id)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def tick_json(
    g: Globals, now: dt.datetime, capsys: pytest.CaptureFixture[str]
) -> dict[str, object]:
    tick(g, as_json=True, now=now)
    document: dict[str, object] = json.loads(capsys.readouterr().out)
    return document


def test_a_new_task_records_its_baseline_and_does_not_run(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + task("five", "*/5 * * * *"))
    assert tick(g, now=T0) == 0
    out = capsys.readouterr().out
    assert "five: not due: first tick for this task: baseline 2026-11-24 12:00 UTC" in out
    assert "next slot 2026-11-24 12:05 UTC" in out
    assert ran(g, "five") == 0 and records(g, "five") == []
    slots = StateStore.for_workspace(g.workspace_root, "local").slot_states()
    assert slots["five"].last_slot == "2026-11-24T12:00:00.000Z"


def test_a_task_whose_last_slot_was_12_minutes_ago_runs_once_for_the_latest_slot(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + task("five", "*/5 * * * *"))
    tick(g, now=T0)  # baseline 12:00
    capsys.readouterr()
    document = tick_json(g, at(12), capsys)  # 12:12:30: slots 12:05 and 12:10 have passed
    [report] = document["tasks"]  # type: ignore[misc]
    assert report["action"] == "run" and report["due"] is True
    assert report["slots"] == ["2026-11-24T12:10:00.000Z"]
    assert report["nextSlot"] == "2026-11-24T12:15:00.000Z"
    assert "2 slot(s) since 2026-11-24 12:00 UTC; catchup latest" in report["reason"]
    assert ran(g, "five") == 1
    [record] = records(g, "five")
    assert (record.status, record.slot) == ("completed", "2026-11-24T12:10:00.000Z")
    assert report["runs"][0]["id"] == record.id


def test_a_second_tick_in_the_same_slot_runs_nothing(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + task("five", "*/5 * * * *"))
    tick(g, now=T0)
    tick(g, now=at(5))
    capsys.readouterr()
    assert tick(g, now=at(8)) == 0
    assert "five: not due: no slot since the last one (2026-11-24 12:05 UTC)" in (
        capsys.readouterr().out
    )
    assert ran(g, "five") == 1
    tick(g, now=at(10))
    assert ran(g, "five") == 2


def test_catchup_none_skips_and_records_it(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + task("quiet", "*/5 * * * *", 'catchup = "none"'))
    tick(g, now=T0)
    capsys.readouterr()
    [report] = tick_json(g, at(12), capsys)["tasks"]  # type: ignore[misc]
    assert report["action"] == "skip"
    assert ran(g, "quiet") == 0
    [record] = records(g, "quiet")
    assert (record.status, record.reason, record.slot) == (
        "skipped",
        "catchup none",
        "2026-11-24T12:10:00.000Z",
    )
    tick(g, now=at(13))
    assert len(records(g, "quiet")) == 1


def test_catchup_all_runs_each_slot_at_most_10(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + task("every", "*/5 * * * *", 'catchup = "all"'))
    tick(g, now=T0)
    capsys.readouterr()
    [report] = tick_json(g, at(62), capsys)["tasks"]  # type: ignore[misc]
    assert "older ones dropped" in report["reason"]
    assert len(report["slots"]) == 10
    assert report["slots"][0] == "2026-11-24T12:15:00.000Z"
    assert report["slots"][-1] == "2026-11-24T13:00:00.000Z"
    assert ran(g, "every") == 10
    assert sorted(r.slot for r in records(g, "every")) == report["slots"]


def test_a_task_still_running_is_skipped_with_reason_overlap(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + task("busy", "*/5 * * * *"))
    tick(g, now=T0)
    store = StateStore.for_workspace(g.workspace_root, "local").open()
    # A run stored by this (live) process: exactly what a `workspace run` still going leaves.
    store.insert(taskruns.new_task_run("busy", "command", dt.datetime.now(dt.UTC)))
    capsys.readouterr()
    [report] = tick_json(g, at(5), capsys)["tasks"]  # type: ignore[misc]
    assert report["action"] == "overlap"
    assert ran(g, "busy") == 0
    skipped = [r for r in records(g, "busy") if r.status == "skipped"]
    assert [(r.reason, r.slot) for r in skipped] == [("overlap", "2026-11-24T12:05:00.000Z")]


def test_an_unscheduled_task_is_never_run(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + task("manual", None) + task("five", "*/5 * * * *"))
    for minutes in (0, 5, 60, 600):
        tick(g, now=at(minutes))
    assert ran(g, "manual") == 0 and records(g, "manual") == []
    assert "manual" not in capsys.readouterr().out
    assert ran(g, "five") == 3


def test_a_disabled_scheduled_task_is_reported_not_run(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + task("off", "* * * * *", "enabled = false"))
    tick(g, now=T0)
    tick(g, now=at(5))
    assert "off: not due: disabled (enabled = false)" in capsys.readouterr().out
    assert ran(g, "off") == 0


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def test_dry_run_runs_nothing_writes_nothing_and_prints_the_plan(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace("[workspace]\n" + task("five", "*/5 * * * *"))
    before = snapshot(g.workspace_root)
    assert tick(g, dry_run=True, now=T0) == 0
    assert "five: not due: first tick" in capsys.readouterr().out
    assert snapshot(g.workspace_root) == before  # not even .workspace/ was created
    tick(g, now=T0)
    capsys.readouterr()
    before = snapshot(g.workspace_root)
    document = tick(g, dry_run=True, as_json=True, now=at(12))
    assert document == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dryRun"] is True
    assert plan["tasks"][0]["action"] == "run" and plan["tasks"][0]["runs"] == []
    assert snapshot(g.workspace_root) == before
    assert ran(g, "five") == 0


def test_json_shape(make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]) -> None:
    g = make_workspace("[workspace]\n" + task("five", "*/5 * * * *"))
    document = tick_json(g, T0, capsys)
    assert set(document) == {"now", "timezone", "dryRun", "tasks"}
    assert document["now"] == "2026-11-24T12:00:30.000Z"
    [report] = document["tasks"]  # type: ignore[misc]
    assert set(report) == {
        "taskId",
        "schedule",
        "catchup",
        "action",
        "due",
        "reason",
        "lastSlot",
        "slots",
        "nextSlot",
        "runs",
    }
    assert report["action"] == "baseline"


def test_slots_are_read_in_the_workspace_timezone(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace('[workspace]\ntimezone = "Europe/Paris"\n' + task("morning", "0 9 * * *"))
    tick(g, now=T0)  # 13:00 in Paris: today's 09:00 is the baseline
    assert "next slot 2026-11-25 09:00 CET" in capsys.readouterr().out
    tick(g, now=dt.datetime(2026, 11, 25, 7, 59, tzinfo=dt.UTC))
    assert ran(g, "morning") == 0
    tick(g, now=dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC))
    assert ran(g, "morning") == 1
    [record] = records(g, "morning")
    assert record.slot == "2026-11-25T08:00:00.000Z"


def test_the_repeated_hour_when_clocks_go_back_runs_each_slot_once(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    # 2026-10-25 in Paris: 03:00 CEST becomes 02:00 CET (01:00 UTC), so 02:00-02:59 comes twice.
    g = make_workspace('[workspace]\ntimezone = "Europe/Paris"\n' + task("half", "*/30 * * * *"))
    start = dt.datetime(2026, 10, 24, 23, 50, tzinfo=dt.UTC)  # 01:50 CEST
    for minutes in range(0, 150, 7):
        assert tick(g, now=start + dt.timedelta(minutes=minutes)) == 0
    slots = [r.slot for r in reversed(records(g, "half"))]
    assert slots == [
        "2026-10-25T00:00:00.000Z",  # 02:00 CEST
        "2026-10-25T00:30:00.000Z",  # 02:30 CEST
        "2026-10-25T01:00:00.000Z",  # 02:00 CET
        "2026-10-25T01:30:00.000Z",  # 02:30 CET
        "2026-10-25T02:00:00.000Z",  # 03:00 CET
    ]
    assert ran(g, "half") == 5
    assert "next slot 2026-10-25 02:00 CET" in capsys.readouterr().out


def test_catchup_all_counts_the_repeated_hour(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace(
        '[workspace]\ntimezone = "Europe/Paris"\n' + task("half", "*/30 * * * *", 'catchup = "all"')
    )
    tick(g, now=dt.datetime(2026, 10, 24, 23, 50, tzinfo=dt.UTC))  # baseline 01:30 CEST
    tick(g, now=dt.datetime(2026, 10, 25, 1, 10, tzinfo=dt.UTC))  # 02:10 CET, second pass
    assert ran(g, "half") == 3  # 02:00 CEST, 02:30 CEST, 02:00 CET
    assert "3 slot(s) since 2026-10-25 01:30 CEST" in capsys.readouterr().out


def test_a_failing_scheduled_task_makes_tick_exit_1(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace(
        '[workspace]\n[[workspace.tasks]]\nid = "bad"\nkind = "command"\n'
        'command = ["bash", "-c", "exit 3"]\nschedule = "* * * * *"\n'
    )
    tick(g, now=T0)
    assert tick(g, now=at(1)) == 1
    assert records(g, "bad")[0].reason == "exited with code 3"


def test_two_ticks_started_together_run_the_task_once(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    # A yearly slot, so two real processes on the real clock see the same newest slot.
    g = make_workspace(
        '[workspace]\n[[workspace.tasks]]\nid = "yearly"\nkind = "command"\n'
        'command = ["bash", "-c", "echo x >> ran-yearly.txt; sleep 0.3"]\n'
        'schedule = "0 0 1 1 *"\n'
    )
    tick(g, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=800))  # baseline two years back
    command = [sys.executable, "-m", "workspace_adapter", "--workspace-root", str(g.workspace_root)]
    procs = [
        subprocess.Popen([*command, "tick", "--json"], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    actions = sorted(o["tasks"][0]["action"] for o in outputs)
    assert actions in (["run", "taken"], ["idle", "run"])
    assert ran(g, "yearly") == 1
    assert len(records(g, "yearly")) == 1
    assert os.path.exists(g.workspace_root / ".workspace" / ".gitignore")
