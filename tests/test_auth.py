"""A backend with a token: every command that talks to it names a 401 as such, and the fix."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.backend import WORKSPACE, Backend
from support.flows import write_flow

from workspace_adapter.base.errors import BackendRefused
from workspace_adapter.client import TOKEN_ENV

TOKEN = "s3cret-token"

TASKS = """
    [workspace]
    name = "auth"

    [[workspace.tasks]]
    id = "greet"
    kind = "flow"
    flow = "demo"
    event = { type = "demo.event" }
"""

GIT_SOURCE = """
[[workspace.sources]]
id = "upstream"
kind = "git-tags"
url = "harness/remotes/upstream.git"
repo = "peezy-tech/patch-moi-harness"
tag_pattern = "v\\\\d+\\\\.\\\\d+\\\\.\\\\d+"
interval = "1h"
"""


def workspace(
    root: Path, url: str, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    return subprocess.run(
        [str(WORKSPACE), "--workspace-root", str(root), "--backend-url", url, *args],
        capture_output=True,
        text=True,
        env={**env, "CODEX_FLOW_PUSH": "0"},
        timeout=60,
    )


def guarded_backend(root: Path, tmp_path: Path) -> Backend:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return Backend(root, tmp_path / "data", "--token-file", str(token_file)).start()


@pytest.fixture
def flow_root(tmp_path: Path) -> Iterator[tuple[Path, Backend]]:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "workspace.toml").write_text(textwrap.dedent(TASKS))
    write_flow(root, "demo")
    daemon = guarded_backend(root, tmp_path)
    try:
        yield root, daemon
    finally:
        assert daemon.stop() == 0


def test_a_flow_task_run_without_the_token_names_the_401_and_the_variable(
    flow_root: tuple[Path, Backend],
) -> None:
    root, daemon = flow_root
    refused = workspace(root, daemon.url, "run", "greet")
    assert refused.returncode == 4, refused
    [line] = refused.stderr.splitlines()
    assert line.startswith(f"greet: 401 unauthorized from {daemon.url}: ")
    assert f"set {TOKEN_ENV} to it" in line and "not reachable" not in line
    assert "(backend refused: 401 unauthorized)" in refused.stdout

    wrong = workspace(root, daemon.url, "run", "greet", "--json", token="wrong")
    assert wrong.returncode == 4, wrong
    assert "does not accept the token in " + TOKEN_ENV in wrong.stderr
    assert '"reason":"backend refused: 401 unauthorized"' in wrong.stdout

    done = workspace(root, daemon.url, "run", "greet", token=TOKEN)
    assert done.returncode == 0, done
    assert "demo/hello: completed" in done.stdout and "greet: completed" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("flow-runs",),
        ("events",),
        ("cancel", "run_x"),
        ("replay", "ev-1"),
        ("dispatch", "EVENT"),
    ],
)
def test_backend_commands_exit_4_with_one_line_naming_the_401(
    flow_root: tuple[Path, Backend], args: tuple[str, ...]
) -> None:
    root, daemon = flow_root
    event = root / "event.json"
    event.write_text('{"id": "ev-1", "type": "demo.event", "payload": {}}')
    args = tuple(str(event) if a == "EVENT" else a for a in args)
    refused = workspace(root, daemon.url, *args)
    assert refused.returncode == 4, refused
    assert refused.stderr.splitlines() == [
        f"error: 401 unauthorized from {daemon.url}: the backend needs a token; "
        f"set {TOKEN_ENV} to it (its --token-file)"
    ]


def test_doctor_names_the_401_in_its_backend_check(flow_root: tuple[Path, Backend]) -> None:
    root, daemon = flow_root
    done = workspace(root, daemon.url, "doctor")
    assert done.returncode == 1, done
    [backend] = [line for line in done.stdout.splitlines() if "backend:" in line]
    assert backend.startswith("fail  backend: 401 unauthorized from ")
    assert TOKEN_ENV in backend
    assert "ok    backend:" in workspace(root, daemon.url, "doctor", token=TOKEN).stdout


def test_watch_and_attempts_retry_name_the_401(workspace_root: Path, tmp_path: Path) -> None:
    from workspace_adapter.harness import cut_release

    root = workspace_root
    (root / "workspace.toml").write_text('[workspace]\nname = "auth"\n' + GIT_SOURCE)
    daemon = guarded_backend(root, tmp_path)
    try:
        assert workspace(root, daemon.url, "watch", "--once").returncode == 0  # primes
        cut_release(root)
        refused = workspace(root, daemon.url, "watch", "--once")
        assert refused.returncode == 4, refused
        assert refused.stderr.splitlines()[-1].startswith(
            f"error: 401 unauthorized from {daemon.url}: "
        )
        assert TOKEN_ENV in refused.stderr and "not reachable" not in refused.stderr
        listed = workspace(root, daemon.url, "attempts", "--json")
        attempt_id = listed.stdout.split('"id":"', 1)[1].split('"', 1)[0]
        retried = workspace(root, daemon.url, "attempts", "retry", attempt_id)
        assert retried.returncode == 4, retried
        assert retried.stderr.splitlines()[-1].startswith(
            f"error: 401 unauthorized from {daemon.url}: "
        )
    finally:
        assert daemon.stop() == 0


def test_a_403_names_the_origin_rule_too() -> None:
    refused = BackendRefused("ws://h:1", 403, token_env=TOKEN_ENV, token_sent=True)
    assert refused.exit_code == 4
    assert refused.message.startswith("403 forbidden from ws://h:1: ")
    assert TOKEN_ENV in refused.message and "--allow-origin" in refused.message
    assert refused.reason == "backend refused: 403 forbidden"
