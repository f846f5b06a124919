"""``workspace serve`` (loops.py): a real process with its backend on a free port, real ticks
(the core tick, logged as ``tick.*`` events), flow tasks handed to the backend in-process, and
a real SIGTERM."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.backend import WORKSPACE
from support.flows import write_flow
from support.waiting import wait_until

from workspace_adapter import client
from workspace_adapter.local import configfile, taskrun
from workspace_adapter.local.state import StateStore
from workspace_adapter.local.taskruns import TaskRun
from workspace_adapter.local.tick import run_tick
from workspace_adapter.loops import seconds_to_next_tick

TICK = "0.2"

TASKS = """
    [workspace]
    name = "srv"

    [[workspace.tasks]]
    id = "every"
    kind = "command"
    command = ["bash", "-c", "echo ran >> ran.txt"]
    schedule = "* * * * *"

    [[workspace.tasks]]
    id = "greet"
    kind = "flow"
    flow = "demo"
    event = { type = "demo.event" }
    schedule = "* * * * *"
"""


class Serve:
    """One ``workspace serve`` subprocess; stdout and stderr go to files the test reads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root.parent / "serve.out"
        self.err = root.parent / "serve.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [
                    str(WORKSPACE),
                    "--workspace-root",
                    str(root),
                    "serve",
                    "--port",
                    "0",
                    "--tick-interval",
                    TICK,
                    "--log-level",
                    "info",
                ],
                stdout=out,
                stderr=err,
                text=True,
                env={**os.environ, "CODEX_FLOW_PUSH": "0"},
            )
        wait_until(lambda: "\n" in self.stdout() or self.proc.poll() is not None, "the URL line")
        first = self.stdout().splitlines()[0] if self.stdout() else ""
        assert first.startswith("workspace backend listening on ws://"), (first, self.stderr())
        self.url = first.split()[-1]

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def events(self, name: str, **fields: object) -> list[dict[str, object]]:
        """The JSON log lines of event ``name`` whose fields include ``fields``."""
        found = []
        for line in self.stderr().splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if entry.get("event") == name and all(entry.get(k) == v for k, v in fields.items()):
                found.append(entry)
        return found

    def stop(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(15)
        return code, time.monotonic() - started


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_flow(tmp_path / "ws", "demo")


@pytest.fixture
def start(root: Path) -> Iterator[Callable[[str], Serve]]:
    started: list[Serve] = []

    def make(toml: str) -> Serve:
        (root / "workspace.toml").write_text(textwrap.dedent(toml))
        serve = Serve(root)
        started.append(serve)
        return serve

    yield make
    for serve in started:
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait()


def baseline_in_the_past(root: Path, minutes: int = 10) -> None:
    """Record every task's baseline as a tick ``minutes`` ago would (no backend needed)."""
    run_tick(
        configfile.load(root),
        mode="local",
        backend_url="ws://127.0.0.1:9",
        sinks=taskrun.Sinks.for_json(True),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes),
    )


def runs(root: Path, task_id: str) -> list[TaskRun]:
    store = StateStore.for_workspace(root, "local")
    return store.runs(task_id) if store.exists() else []


async def test_serve_answers_ticks_against_its_own_backend_and_stops_on_sigterm(
    root: Path, start: Callable[[str], Serve]
) -> None:
    (root / "workspace.toml").write_text(textwrap.dedent(TASKS))
    baseline_in_the_past(root)
    serve = start(TASKS)

    info = await client.probe(serve.url)
    assert info["name"]

    def ended(task_id: str) -> bool:
        return any(r.status != "running" for r in runs(root, task_id))

    wait_until(lambda: ended("every") and ended("greet"), "both scheduled tasks to run")
    [command_run] = [r for r in runs(root, "every") if r.status != "running"][-1:]
    assert command_run.status == "completed", command_run
    assert (root / "ran.txt").read_text().startswith("ran")
    [flow_run] = [r for r in runs(root, "greet") if r.status != "running"][-1:]
    # Dispatched to serve's own backend: the run ids are that backend's, and it ran the step.
    assert flow_run.status == "completed" and flow_run.run_ids, flow_run
    assert "hello" in (flow_run.stdout_tail or "")
    # Logged, not printed: the daemon's stdout holds its URL line only.
    assert serve.events("tick.task", task_id="every", action="run", due=True)
    assert serve.events("tick.ran", task_id="greet", status="completed", exit_code=0)
    assert serve.stdout().splitlines() == [f"workspace backend listening on {serve.url}"]
    assert '"watching": false' in serve.stderr()

    code, seconds = serve.stop()
    assert code == 0, serve.stderr()
    assert seconds < 10
    assert "serve.stopped" in serve.stderr()


def test_a_failing_tick_is_logged_and_the_loop_goes_on(
    root: Path, start: Callable[[str], Serve]
) -> None:
    serve = start(TASKS)
    wait_until(lambda: serve.events("tick.task", action="baseline"), "the baselines")
    (root / "workspace.toml").write_text("[workspace\n")  # what a bad edit leaves behind
    wait_until(lambda: '"tick.failed"' in serve.stderr(), "a failed tick")
    assert serve.proc.poll() is None
    (root / "workspace.toml").write_text(
        textwrap.dedent(TASKS)
        + '[[workspace.tasks]]\nid = "late"\nkind = "command"\ncommand = ["true"]\n'
        + 'schedule = "* * * * *"\n'
    )
    wait_until(
        lambda: serve.events("tick.task", task_id="late", action="baseline"), "a tick after the fix"
    )
    assert serve.stop()[0] == 0


def test_sigterm_ends_a_command_task_that_is_still_running(
    root: Path, start: Callable[[str], Serve]
) -> None:
    toml = """
        [workspace]
        [[workspace.tasks]]
        id = "nap"
        kind = "command"
        command = ["sleep", "300"]
        schedule = "* * * * *"
    """
    (root / "workspace.toml").write_text(textwrap.dedent(toml))
    baseline_in_the_past(root)
    serve = start(toml)
    wait_until(lambda: runs(root, "nap"), "the nap to start")
    code, seconds = serve.stop()
    assert code == 0, serve.stderr()
    assert seconds < 10
    [record] = runs(root, "nap")
    assert (record.status, record.reason) == ("failed", "killed by signal SIGTERM")


def test_serve_watches_the_sources_when_there_are_some(
    root: Path, start: Callable[[str], Serve], monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = root / "upstream"
    upstream.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    for argv in (
        ["git", "init", "-q"],
        ["git", "commit", "-q", "--allow-empty", "-m", "one"],
        ["git", "tag", "v1.0.0"],
    ):
        subprocess.run(argv, cwd=upstream, env=env, check=True)
    monkeypatch.delenv("DATA_DIR", raising=False)
    serve = start(
        """
        [workspace]
        [[workspace.sources]]
        id = "upstream"
        kind = "git-tags"
        url = "upstream"
        repo = "example/upstream"
        interval = "1h"
        """
    )
    wait_until(lambda: "upstream: primed with 1 release(s)" in serve.stdout(), "the first poll")
    assert "(v1.0.0); nothing dispatched" in serve.stdout()
    assert '"watching": true' in serve.stderr()
    assert serve.stop()[0] == 0


def test_ticks_land_just_after_each_interval_boundary() -> None:
    assert seconds_to_next_tick(120.0, 60) == pytest.approx(60.05)
    assert seconds_to_next_tick(179.9, 60) == pytest.approx(0.15)
    assert seconds_to_next_tick(10.3, 0.5) == pytest.approx(0.25)
