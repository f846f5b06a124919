"""``workspace show RUN_ID [--follow]`` against a real daemon."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from support.backend import WORKSPACE, Backend

from workspace_adapter import following

SLOW = """
    name = "slow"
    [[steps]]
    name = "talk"
    runner = "command"
    command = ["sh", "talk.sh"]
    [steps.trigger]
    type = "slow.event"
"""

BROKEN = """
    name = "broken"
    [[steps]]
    name = "fail"
    runner = "command"
    command = ["sh", "-c", "echo bad >&2; exit 3"]
    [steps.trigger]
    type = "broken.event"
"""


TALK = """echo one
sleep 1
echo two
echo two-err >&2
echo 'FLOW_RESULT {"status": "changed", "message": "said twice"}'
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Backend]:
    root = tmp_path / "ws"
    for name, text in (("slow", SLOW), ("broken", BROKEN)):
        (root / "flows" / name).mkdir(parents=True)
        (root / "flows" / name / "flow.toml").write_text(textwrap.dedent(text))
    (root / "flows" / "slow" / "talk.sh").write_text(TALK)
    backend = Backend(root, tmp_path / "data").start()
    try:
        yield backend
    finally:
        assert backend.stop() == 0


def dispatch(url: str, event_id: str, event_type: str) -> str:
    event = {"id": event_id, "type": event_type, "payload": {}}
    outcome = anyio.run(lambda: following.dispatch_and_follow(url, event, wait=False))
    [run_id] = outcome.run_ids
    return run_id


def show(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WORKSPACE), "--backend-url", url, "show", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_follow_streams_the_run_then_shows_it(daemon: Backend) -> None:
    run_id = dispatch(daemon.url, "slow-1", "slow.event")
    followed = show(daemon.url, run_id, "--follow")
    assert followed.returncode == 0, followed
    out = followed.stdout.splitlines()
    # It streams from the moment it attaches: "one" may have been printed before.
    streamed = out.index(f"{run_id}  slow/talk  changed")
    assert out[:streamed] in (["one", "two"], ["two"]), out
    assert "  said     said twice" in out
    assert "two-err" in followed.stderr and "FLOW_RESULT" not in followed.stdout
    # Once it ended: the summary alone, with the tails of its output.
    shown = show(daemon.url, run_id)
    assert shown.returncode == 0, shown
    assert shown.stdout.splitlines()[0] == f"{run_id}  slow/talk  changed"
    assert "  event    slow-1" in shown.stdout
    assert "    one" in shown.stdout and "    two-err" in shown.stdout
    as_json = show(daemon.url, run_id, "--json")
    document = json.loads(as_json.stdout)
    assert list(document) == ["run"]
    assert (document["run"]["id"], document["run"]["status"]) == (run_id, "completed")


def test_follow_exits_with_the_runs_status_and_json_keeps_stdout_clean(daemon: Backend) -> None:
    run_id = dispatch(daemon.url, "broken-1", "broken.event")
    followed = show(daemon.url, run_id, "--follow", "--json")
    assert followed.returncode == 1, followed
    document = json.loads(followed.stdout)
    assert document["run"]["status"] == "failed"
    assert document["run"]["stderr"] == "bad\n"  # it ended before show attached
    # Showing a failed run is not a failure of show.
    assert show(daemon.url, run_id).returncode == 0


def test_an_unknown_run_is_bad_input(daemon: Backend) -> None:
    done = show(daemon.url, "run_nope")
    assert done.returncode == 2, done
    assert done.stderr.startswith("error: ") and "run_nope" in done.stderr
