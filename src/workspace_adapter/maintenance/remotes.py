"""Rule 3 of the engine: the fork's remotes, and the remote-tracking refs its push leases use."""

from __future__ import annotations

from collections.abc import Callable

from workspace_adapter.base.status import Status
from workspace_adapter.maintenance.git import Git
from workspace_adapter.maintenance.outcome import Outcome
from workspace_adapter.maintenance.settings import MaintenanceSettings


def ensure_remotes(
    git: Git, settings: MaintenanceSettings, emit: Callable[[str], None]
) -> list[str]:
    """Rule 3, first half: add the upstream remote when missing, never a push remote.

    Returns the fork's remotes, the upstream one included.
    """
    s = settings
    remotes = git.remotes()
    if s.upstream_remote not in remotes:
        if not s.upstream_repo_url:
            raise Outcome(
                Status.BLOCKED,
                f"{s.fork_repo} has no remote {s.upstream_remote!r} and the fork entry has no "
                "upstream_url; add one of them",
            )
        done = git.add_remote(s.upstream_remote, s.upstream_repo_url)
        if not done.ok:
            raise Outcome(
                Status.BLOCKED,
                f"cannot add remote {s.upstream_remote} to {s.fork_repo}: {done.last_line()}",
            )
        emit(f"added remote {s.upstream_remote} -> {s.upstream_repo_url}")
        remotes.append(s.upstream_remote)
    missing = [r for r in s.push_remotes if r not in remotes]
    if missing and s.push:
        raise Outcome(
            Status.BLOCKED,
            f"push remote {', '.join(missing)} is not configured in {s.fork_repo}; add it "
            "with `git remote add NAME URL` (the flow never invents push remotes)",
        )
    return remotes


def fetch_for_lease(
    git: Git, settings: MaintenanceSettings, remotes: list[str], emit: Callable[[str], None]
) -> list[str]:
    """Rule 3, second half: upstream tags, and the branch each lease will be checked on.

    Returns the push remotes whose branch was fetched (or found gone).
    """
    s = settings
    fetched: list[str] = []
    done = git("fetch", "--tags", s.upstream_remote)
    if not done.ok:
        raise Outcome(
            Status.BLOCKED, f"fetching tags from {s.upstream_remote} failed: {done.last_line()}"
        )
    for remote in s.push_remotes:
        if remote not in remotes:
            emit(f"push remote {remote} is not configured; not fetching it")
            continue
        tracking = f"refs/remotes/{remote}/{s.target_branch}"
        done = git("fetch", remote, f"+refs/heads/{s.target_branch}:{tracking}")
        if done.ok:
            fetched.append(remote)
            continue
        if "couldn't find remote ref" in done.stderr:
            # The branch is gone remotely: the lease must then say "must not exist".
            git("update-ref", "-d", tracking)
            fetched.append(remote)
            continue
        raise Outcome(Status.BLOCKED, f"fetching {remote} failed: {done.last_line()}")
    return fetched


def leases(git: Git, settings: MaintenanceSettings) -> dict[str, str | None]:
    """Each push remote's tracking ref of the target branch (None: the branch must not exist)."""
    return {
        remote: git.ref_sha(f"refs/remotes/{remote}/{settings.target_branch}")
        for remote in settings.push_remotes
    }
