"""The core tick (local/tick.py): reports instead of printing, flow tasks to a given dispatcher."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest

from workspace_adapter.local import configfile, taskrun
from workspace_adapter.local.tick import SlotReport, TickListener, run_tick

T0 = dt.datetime(2026, 11, 24, 12, 0, 30, tzinfo=dt.UTC)

TOML = """
[workspace]
name = "core"

[[workspace.tasks]]
id = "flow"
kind = "flow"
flow = "demo.event"
schedule = "*/5 * * * *"

[[workspace.tasks]]
id = "cmd"
kind = "command"
command = ["bash", "-c", "echo out; echo err >&2"]
schedule = "*/5 * * * *"

[[workspace.tasks]]
id = "manual"
kind = "command"
command = ["true"]
"""


class FakeDispatcher:
    """Takes every event; its one run completes with a line of output."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(
        self, event: dict[str, Any], *, wait: bool, timeout: float, on_output: taskrun.OutputSink
    ) -> taskrun.FlowOutcome:
        from workspace_adapter.protocol import WireRun

        self.events.append(event)
        on_output("run_1", "stdout", "hello from the step")
        run = WireRun(id="run_1", status="completed", resultStatus="changed")
        return taskrun.FlowOutcome(1, ["run_1"], [run])


class Recorder(TickListener):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def decided(self, decision: Any) -> None:
        self.seen.append(f"decided {decision.task.id} {decision.action}")

    def slot_done(self, report: SlotReport) -> None:
        self.seen.append(f"slot {report.task_id} {report.outcome} {report.exit_code}")


def test_the_core_tick_reports_without_printing_and_hands_flows_to_its_dispatcher(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "workspace.toml").write_text(TOML)
    config = configfile.load(tmp_path)
    out = io.StringIO()
    sinks = taskrun.Sinks(out, out)
    dispatcher = FakeDispatcher()
    common: dict[str, Any] = {
        "mode": "local",
        "backend_url": "ws://127.0.0.1:9",
        "sinks": sinks,
        "dispatcher": dispatcher,
    }
    first = run_tick(config, now=T0, **common)
    assert [(t.task_id, t.action) for t in first.tasks] == [
        ("flow", "baseline"),
        ("cmd", "baseline"),
    ]
    listener = Recorder()
    report = run_tick(config, now=T0 + dt.timedelta(minutes=6), listener=listener, **common)
    assert capsys.readouterr() == ("", "")  # nothing printed: the caller decides
    assert listener.seen == [
        "decided flow run",
        "slot flow ran 0",
        "decided cmd run",
        "slot cmd ran 0",
    ]
    assert report.exit_code == 0
    flow, cmd = report.tasks
    [event] = dispatcher.events
    assert event["type"] == "demo.event" and event["payload"] == {"taskId": "flow"}
    [flow_run] = flow.runs
    assert (flow_run.status, flow_run.run_ids) == ("changed", ["run_1"])
    assert flow_run.stdout_tail == "hello from the step\n"
    [cmd_run] = cmd.runs
    assert (cmd_run.status, cmd_run.stdout_tail, cmd_run.stderr_tail) == (
        "completed",
        "out\n",
        "err\n",
    )
    assert "out\n" in out.getvalue() and "hello from the step\n" in out.getvalue()
    document = report.to_json()
    assert document["now"] == "2026-11-24T12:06:30.000Z" and document["dryRun"] is False
    assert [t["runs"][0]["status"] for t in document["tasks"]] == ["changed", "completed"]


def test_a_dry_run_decides_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "workspace.toml").write_text(TOML)
    config = configfile.load(tmp_path)
    sinks = taskrun.Sinks(io.StringIO(), io.StringIO())
    report = run_tick(
        config, mode="local", backend_url="ws://127.0.0.1:9", sinks=sinks, now=T0, dry_run=True
    )
    assert [t.action for t in report.tasks] == ["baseline", "baseline"]
    assert not (tmp_path / ".workspace").exists()
