"""The fork's checkout: a repository of its own (rule 2), where it was found, putting it back.

Every run leaves the checkout on the branch it found, with a clean tree, whatever the
outcome. Rule 4 refuses a fork that is dirty or mid-operation, so anything found changed here
was changed by the run (a stopped rebase, a check that wrote files) and is the run's to undo.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec

from workspace_adapter.base.status import Status
from workspace_adapter.maintenance.git import Git
from workspace_adapter.maintenance.outcome import Outcome
from workspace_adapter.maintenance.settings import MaintenanceSettings


class FoundCheckout(msgspec.Struct, frozen=True, kw_only=True):
    """The branch (None: detached) and commit the checkout was on when the run began."""

    branch: str | None
    sha: str

    def describe(self) -> str:
        return self.branch or self.sha


def require_own_repository(git: Git, settings: MaintenanceSettings) -> None:
    """Rule 2: the fork checkout exists and is a repository of its own."""
    s = settings
    if not s.fork_path.is_dir():
        raise Outcome(
            Status.BLOCKED,
            f"fork checkout {s.fork_repo} does not exist ({s.fork_path}); clone the fork "
            "there or run `workspace harness init`",
        )
    done = git("rev-parse", "--show-toplevel")
    if not done.ok:
        raise Outcome(
            Status.BLOCKED,
            f"fork checkout {s.fork_repo} is not a git repository ({done.last_line()}); "
            "clone the fork there",
        )
    top = Path(done.stdout.strip())
    if top.resolve() != s.fork_path.resolve():
        raise Outcome(
            Status.BLOCKED,
            f"fork checkout {s.fork_repo} is not its own repository: it is a folder inside "
            f"{top}; clone the fork into {s.fork_repo}",
        )
    if git.ref_sha("HEAD") is None:
        raise Outcome(
            Status.BLOCKED,
            f"fork checkout {s.fork_repo} has no commit checked out (an empty repository?); "
            "clone the fork there",
        )


def found_checkout(git: Git) -> FoundCheckout:
    return FoundCheckout(branch=git.current_branch(), sha=git.head_sha())


def abort_rebase(git: Git) -> None:
    """Abort a rebase the run started and did not finish (e.g. git itself was killed)."""
    if git.operation_in_progress() == "rebase":
        git("rebase", "--abort")


def revert_leftovers(git: Git, label: str, identity: Callable[[], list[str]]) -> str | None:
    """Set aside every change in a tree that was clean when the run began; say where it went.

    The changes go to a stash (untracked files included), not to the bin: a check that writes
    files is undone, and a hand edit made during the run can still be recovered.
    """
    dirty = git.status_lines()
    if not dirty:
        return None
    stashed = git("stash", "push", "--include-untracked", "--quiet", "-m", label, config=identity())
    left = git.status_lines()
    if not stashed.ok or left:
        first = (left or dirty)[0][3:]
        raise RuntimeError(
            f"{len(left or dirty)} paths are still changed after stashing (first {first!r}); "
            "clean the fork by hand"
        )
    return (
        f"set aside what the run left changed ({len(dirty)} paths, first {dirty[0][3:]!r}) "
        f"in `git stash` as {label!r}"
    )


def switch_back(git: Git, found: FoundCheckout) -> str | None:
    """Return to the branch (or detached commit) of ``found``; a problem as one line, or None."""
    if found.branch is not None:
        if git.current_branch() == found.branch:
            return None
        done = git.switch(found.branch)
    else:
        if git.current_branch() is None and git.head_sha() == found.sha:
            return None
        done = git.switch_detached(found.sha)
    return None if done.ok else f"could not switch back to {found.describe()}: {done.last_line()}"
