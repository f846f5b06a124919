"""Helpers for the maintenance tests: run the engine on a private copy of the harness."""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest
from support.git import git as run_git

from workspace_adapter.events import FlowResult
from workspace_adapter.maintenance.engine import ForkMaintenance
from workspace_adapter.maintenance.settings import load_config, resolve_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
FLOW_DIR = REPO_ROOT / "flows" / "patch-moi-harness"
FAST_CHECKS = ["node --test"]


def flow_config() -> dict[str, Any]:
    with (FLOW_DIR / "flow.toml").open("rb") as fh:
        return dict(tomllib.load(fh)["config"])


class Maintain(Protocol):
    lines: list[str]

    def __call__(
        self,
        tag: str | None = "v0.1.3",
        *,
        payload: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        **config: Any,
    ) -> FlowResult: ...


class Git(Protocol):
    def __call__(self, repo: Path, *args: str, check: bool = True) -> str: ...


@pytest.fixture
def git() -> Git:
    return run_git


@pytest.fixture
def fork(workspace_root: Path) -> Path:
    return workspace_root / "harness" / "fork"


@pytest.fixture
def maintain(workspace_root: Path) -> Maintain:
    """Run ForkMaintenance in-process; config keys override flow.toml, fetch/push default off."""
    lines: list[str] = []

    def run(
        tag: str | None = "v0.1.3",
        *,
        payload: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        **config: Any,
    ) -> FlowResult:
        merged = {**flow_config(), "fetch": False, "push": False, **config}
        if payload is None:
            payload = {"repo": "peezy-tech/patch-moi-harness"}
            if tag is not None:
                payload = {**payload, "tag": tag}
        settings = resolve_settings(
            load_config(merged), workspace_root=workspace_root, payload=payload, env={}
        )
        event = {"id": f"test:{tag}", "type": "upstream.release", "payload": dict(payload)}
        engine = ForkMaintenance(settings, event, emit=lines.append, env=env)
        return engine.run()

    run.lines = lines  # type: ignore[attr-defined]
    return run  # type: ignore[return-value]


@pytest.fixture
def fork_state(fork: Path) -> Callable[[], dict[str, Any]]:
    """A snapshot of what a run must not disturb when it refuses or backs out."""

    def snapshot() -> dict[str, Any]:
        git_dir = fork / ".git"
        return {
            "head": run_git(fork, "rev-parse", "HEAD"),
            "branch": run_git(fork, "symbolic-ref", "--quiet", "--short", "HEAD", check=False),
            "main": run_git(fork, "rev-parse", "refs/heads/main"),
            "status": run_git(fork, "status", "--porcelain"),
            "rebasing": (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists(),
        }

    return snapshot


class RunStep(Protocol):
    def __call__(
        self,
        context: Mapping[str, Any] | bytes,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> tuple[int, list[str], str]: ...


@pytest.fixture
def step_context(workspace_root: Path) -> Callable[..., dict[str, Any]]:
    """The JSON context a runner writes on the step's stdin (SPEC §6)."""

    def build(event: Mapping[str, Any], **config: Any) -> dict[str, Any]:
        return {
            "flow": {
                "name": "patch-moi-harness",
                "version": "0.1.0",
                "root": str(workspace_root / "flows" / "patch-moi-harness"),
                "step": "maintain",
                "config": {**flow_config(), **config},
                "event": dict(event),
            },
            "runtime": {
                "eventId": event.get("id"),
                "runId": "run_test",
                "attemptId": "run_test",
                "replay": False,
                "workspaceBackendUrl": "ws://127.0.0.1:3586",
                "workspaceRoot": str(workspace_root),
                "launchedBy": "pytest",
            },
        }

    return build


@pytest.fixture
def run_step(workspace_root: Path) -> RunStep:
    """Run the flow's step.py as the runner would: (exit code, stdout lines, stderr)."""

    def run(
        context: Mapping[str, Any] | bytes,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> tuple[int, list[str], str]:
        import json
        import sys

        base = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_FLOW_")}
        stdin = context if isinstance(context, bytes) else json.dumps(context).encode()
        proc = subprocess.run(
            [sys.executable, str(workspace_root / "flows" / "patch-moi-harness" / "step.py")],
            input=stdin,
            cwd=cwd or workspace_root,
            env={**base, **(env or {})},
            capture_output=True,
            timeout=60,
            check=False,
        )
        return proc.returncode, proc.stdout.decode().splitlines(), proc.stderr.decode()

    return run
