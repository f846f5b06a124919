"""Remotes, pushing with a lease, branch restoring and the fork lock (SPEC §7 rules 3, 5, 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workspace_adapter.harness import cut_release

FAST = ["node --test"]
Snapshot = Callable[[], dict[str, Any]]


def bare(root: Path, name: str) -> Path:
    return root / "harness" / "remotes" / f"{name}.git"


def test_push_publishes_to_every_push_remote(
    workspace_root: Path, maintain: Any, fork: Path, git: Any
) -> None:
    cut_release(workspace_root)
    result = maintain("v0.1.4", fetch=True, push=True, verify_commands=FAST)
    assert result.status == "changed", result.message
    head = git(fork, "rev-parse", "HEAD")
    for name in ("origin", "jojo"):
        assert git(bare(workspace_root, name), "rev-parse", "refs/heads/main") == head
    refs = result.artifacts["candidateRefs"]
    assert [(r["remote"], r["sha"], r["pushed"]) for r in refs] == [
        ("origin", head, True),
        ("jojo", head, True),
    ]
    assert result.artifacts["pushed"] is True
    assert "pushed to origin, jojo" in (result.message or "")
    pushes = [r["argv"] for r in result.artifacts["commands"] if r["argv"][1:2] == ["push"]]
    assert any(
        a[-2:] == ["origin", "HEAD:refs/heads/main"] and "--dry-run" not in a for a in pushes
    )
    assert all(
        a[2].startswith("--force-with-lease=refs/heads/main:")
        for a in pushes
        if "--dry-run" not in a
    )


def test_remote_that_moved_is_refused_by_the_lease(
    workspace_root: Path, tmp_path: Path, maintain: Any, fork: Path, git: Any, fork_state: Snapshot
) -> None:
    jojo_before = git(bare(workspace_root, "jojo"), "rev-parse", "refs/heads/main")
    other = tmp_path / "other-clone"
    git(tmp_path, "clone", "-q", str(bare(workspace_root, "origin")), str(other))
    git(other, "commit", "-q", "--allow-empty", "-m", "someone else's work")
    git(other, "push", "-q", "origin", "main")
    moved = git(other, "rev-parse", "HEAD")
    before = fork_state()
    result = maintain("v0.1.3", fetch=False, push=True, verify_commands=FAST)
    assert result.status == "blocked", result.message
    assert "remote moved" in (result.message or "")
    assert git(bare(workspace_root, "origin"), "rev-parse", "refs/heads/main") == moved
    assert git(bare(workspace_root, "jojo"), "rev-parse", "refs/heads/main") == jojo_before
    assert [r["pushed"] for r in result.artifacts["candidateRefs"]] == [False, False]
    assert result.artifacts["pushed"] is False
    assert fork_state() == before


def test_lease_on_a_branch_that_must_not_exist(
    workspace_root: Path, maintain: Any, fork: Path, git: Any
) -> None:
    # The fork never saw jojo's branch, yet jojo has one: pushing would overwrite it.
    jojo = git(bare(workspace_root, "jojo"), "rev-parse", "refs/heads/main")
    cut_release(workspace_root)
    git(fork, "fetch", "-q", "--tags", "upstream")
    git(fork, "update-ref", "-d", "refs/remotes/jojo/main")
    result = maintain("v0.1.4", fetch=False, push=True, verify_commands=FAST)
    assert result.status == "blocked"
    assert "jojo's main was absent at the last fetch" in (result.message or "")
    assert git(bare(workspace_root, "jojo"), "rev-parse", "refs/heads/main") == jojo
    # The dry run caught it before origin was pushed.
    assert git(bare(workspace_root, "origin"), "rev-parse", "refs/heads/main") == jojo


def test_missing_upstream_remote_is_added_from_the_config(
    workspace_root: Path, maintain: Any, fork: Path, git: Any
) -> None:
    git(fork, "remote", "remove", "upstream")
    cut_release(workspace_root)
    result = maintain("v0.1.4", fetch=True, verify_commands=FAST)
    assert result.status == "changed", result.message
    url = git(fork, "remote", "get-url", "upstream")
    assert url == str(workspace_root.resolve() / "harness" / "remotes" / "upstream.git")
    assert any(line.startswith("added remote upstream") for line in maintain.lines)


def test_missing_origin_is_never_invented(maintain: Any, fork: Path, git: Any) -> None:
    git(fork, "remote", "remove", "origin")
    result = maintain("v0.1.3", fetch=True, verify_commands=FAST)
    assert result.status == "completed", result.message
    assert "origin" not in git(fork, "remote").split()
    pushing = maintain("v0.1.3", fetch=True, push=True, verify_commands=FAST)
    assert pushing.status == "blocked"
    assert "push remote origin is not configured" in (pushing.message or "")
    assert "origin" not in git(fork, "remote").split()


def test_fork_goes_back_to_the_branch_it_was_on(
    workspace_root: Path, maintain: Any, fork: Path, git: Any
) -> None:
    git(fork, "switch", "-q", "-c", "topic", "HEAD~1")
    topic = git(fork, "rev-parse", "topic")
    cut_release(workspace_root)
    result = maintain("v0.1.4", fetch=True, verify_commands=FAST)
    assert result.status == "changed", result.message
    assert git(fork, "symbolic-ref", "--short", "HEAD") == "topic"
    assert git(fork, "rev-parse", "HEAD") == topic
    assert git(fork, "rev-parse", "main~3") == git(fork, "rev-parse", "v0.1.4^{commit}")
    assert git(fork, "status", "--porcelain") == ""


def test_fork_goes_back_to_the_branch_after_a_conflict(
    workspace_root: Path, maintain: Any, fork: Path, git: Any
) -> None:
    git(fork, "switch", "-q", "-c", "topic")
    cut_release(workspace_root, conflict=True)
    result = maintain("v0.1.4", fetch=True, verify_commands=FAST)
    assert result.status == "needs_intervention"
    assert git(fork, "symbolic-ref", "--short", "HEAD") == "topic"


def test_detached_head_is_restored(maintain: Any, fork: Path, git: Any) -> None:
    git(fork, "switch", "-q", "--detach", "HEAD~2")
    detached = git(fork, "rev-parse", "HEAD")
    result = maintain("v0.1.3", verify_commands=FAST)
    assert result.status == "completed", result.message
    assert git(fork, "symbolic-ref", "--quiet", "HEAD", check=False) == ""
    assert git(fork, "rev-parse", "HEAD") == detached


def test_two_runs_at_once_one_is_busy(
    workspace_root: Path,
    fork: Path,
    git: Any,
    fork_state: Snapshot,
    maintain: Any,
    step_context: Any,
) -> None:
    before = fork_state()
    event = {
        "id": "test:busy",
        "type": "upstream.release",
        "payload": {"repo": "peezy-tech/patch-moi-harness", "tag": "v0.1.3"},
    }
    context = step_context(event, fetch=False, verify_commands=["sleep 2"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_FLOW_")}
    env["CODEX_FLOW_VERBOSE"] = "1"  # the check's command line says when it starts
    first = subprocess.Popen(
        [sys.executable, str(workspace_root / "flows" / "patch-moi-harness" / "step.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert first.stdin is not None and first.stdout is not None
    first.stdin.write(json.dumps(context))
    first.stdin.close()
    seen_sleep = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert first.stdout is not None
        for line in first.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("$ bash -c 'sleep 2'"):
                seen_sleep.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert seen_sleep.wait(30), lines
        second = maintain("v0.1.3", verify_commands=FAST)
    finally:
        first.wait(60)
        reader.join(10)
    assert second.status == "blocked"
    assert "fork busy" in (second.message or "")
    result = json.loads(lines[-1].removeprefix("FLOW_RESULT "))
    assert result["status"] == "completed"
    assert fork_state() == before


@pytest.mark.parametrize("start", ["main", "topic"])
def test_blocked_runs_keep_the_branch(
    maintain: Any, fork: Path, git: Any, fork_state: Snapshot, start: str
) -> None:
    if start != "main":
        git(fork, "switch", "-q", "-c", start)
    before = fork_state()
    result = maintain("v9.9.9")
    assert result.status == "blocked"
    assert fork_state() == before
