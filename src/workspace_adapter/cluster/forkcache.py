"""A worker's fork checkout is a cache of the fork's remote branch, refreshed before each run.

Before a maintenance run the worker fetches the fork's branch from its ``canonical_remote``
(else its first push remote) and moves the local branch to it, so every worker starts from the
same state whatever it did before. After the run the result names the worker that holds the
candidate refs, and with ``candidates_remote`` those refs (``refs/workspace/candidates/*``) are
pushed there too, so they outlive the worker's checkout.

A hook the worker calls around the fork engine, not part of it: the engine itself runs
unchanged in the step process.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from workspace_adapter.base.gitenv import no_git_env
from workspace_adapter.flows.builtin import FORK_FLOW
from workspace_adapter.flows.runner import StepInvocation, StepOutcome

CANDIDATES = "refs/workspace/candidates"
GIT_TIMEOUT_SECONDS = 300


class ForkCache(msgspec.Struct, frozen=True, kw_only=True):
    """What the worker needs to know of the fork a run maintains."""

    repository: str  # the cluster-wide lock's name: the fork's repository, never a path
    path: Path
    branch: str
    fetch: bool
    source_remote: str | None  # where the branch is refreshed from
    candidates_remote: str | None


def maintained_fork(invocation: StepInvocation) -> ForkCache | None:
    """The fork a run maintains, when its step is the fork engine; None for any other step."""
    config = invocation.package.config
    if invocation.package.name != FORK_FLOW and not ("fork" in config or "fork_repo" in config):
        return None
    from workspace_adapter.maintenance.settings import (
        ForkNotConfigured,
        SettingsError,
        load_config,
        resolve_settings,
        select_fork,
    )

    payload = invocation.event.get("payload")
    payload = payload if isinstance(payload, dict) else None
    try:
        selected = select_fork(load_config(config), payload)
        settings = resolve_settings(
            selected, workspace_root=invocation.workspace_root, payload=payload
        )
    except (ForkNotConfigured, SettingsError):
        return None  # the step says why in its own result
    source = settings.canonical_remote or next(iter(settings.push_remotes), None)
    return ForkCache(
        repository=settings.fork_repo_full_name or settings.fork_name or settings.fork_repo,
        path=settings.fork_path,
        branch=settings.target_branch,
        fetch=settings.fetch,
        source_remote=source,
        candidates_remote=settings.candidates_remote,
    )


def _git(fork: ForkCache, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(fork.path), *args],
        capture_output=True,
        text=True,
        env=no_git_env(),
        timeout=GIT_TIMEOUT_SECONDS,
        check=False,
    )


def _failed(what: str, done: subprocess.CompletedProcess[str]) -> str:
    said = (done.stderr or done.stdout).strip().splitlines()
    return f"{what} failed (exit {done.returncode}): {said[-1] if said else 'no output'}"


def refresh_checkout(fork: ForkCache) -> str | None:
    """Move the fork's branch to its remote's; a one-line reason when it was left as it was.

    Blocking (git): run it in a thread. A checkout that is not there, has local changes or a
    rebase in progress is left alone: the fork engine reports those itself.
    """
    if not fork.fetch or fork.source_remote is None or not (fork.path / ".git").exists():
        return None
    status = _git(fork, "status", "--porcelain", "--untracked-files=no")
    if status.returncode != 0 or status.stdout.strip():
        return f"fork checkout {fork.path} not refreshed: it has local changes"
    tracking = f"refs/remotes/{fork.source_remote}/{fork.branch}"
    fetched = _git(
        fork,
        "fetch",
        "--quiet",
        "--no-tags",
        fork.source_remote,
        f"+refs/heads/{fork.branch}:{tracking}",
    )
    if fetched.returncode != 0:
        return _failed(f"refreshing the fork from {fork.source_remote}", fetched)
    head = _git(fork, "symbolic-ref", "--quiet", "--short", "HEAD")
    if head.returncode == 0 and head.stdout.strip() == fork.branch:
        moved = _git(fork, "reset", "--quiet", "--hard", tracking)
    else:
        moved = _git(fork, "branch", "--force", fork.branch, tracking)
    if moved.returncode != 0:
        return _failed(f"moving {fork.branch} to {tracking}", moved)
    return None


def after_run(
    fork: ForkCache, outcome: StepOutcome, worker: str, line: Callable[[str, str], None]
) -> StepOutcome:
    """Name the worker holding the candidate refs; push them to ``candidates_remote``."""
    result = outcome.result
    if not isinstance(result, dict):
        return outcome
    artifacts: dict[str, Any] = dict(result.get("artifacts") or {})
    artifacts["worker"] = worker
    if fork.candidates_remote and (fork.path / ".git").exists():
        pushed = _git(
            fork,
            "push",
            "--quiet",
            "--force",
            fork.candidates_remote,
            f"{CANDIDATES}/*:{CANDIDATES}/*",
        )
        if pushed.returncode == 0:
            artifacts["candidatesRemote"] = fork.candidates_remote
        else:
            problem = _failed(f"pushing candidate refs to {fork.candidates_remote}", pushed)
            artifacts["candidatesRemoteError"] = problem
            line("stderr", f"workspace worker {worker}: {problem}")
    return msgspec.structs.replace(outcome, result={**result, "artifacts": artifacts})
