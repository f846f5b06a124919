"""Where a patch series is rebuilt: a detached work tree of the fork, and a scratch folder.

The work tree lives in the fork's git dir under a fixed name, so a run that was killed leaves
at most one behind and the next run removes it (the fork lock makes sure no run still uses it).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from workspace_adapter.base.status import Status
from workspace_adapter.maintenance.git import Git
from workspace_adapter.maintenance.outcome import Outcome

WORKTREE_NAME = "workspace-rebuild"
# Hooks of the fork are for people working in it, not for our private work tree.
NO_HOOKS = "core.hooksPath=/dev/null"


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A temporary folder for patch files and diffs, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="workspace-series-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def rebuild_worktree(git: Git, release: str, what: str) -> Iterator[Git]:
    """A detached work tree of ``git``'s repository at ``release``, removed afterwards."""
    path = git.common_dir() / WORKTREE_NAME
    drop_worktree(git, path)  # left by a run that was killed
    added = git("worktree", "add", "--detach", "--quiet", str(path), release, config=[NO_HOOKS])
    if not added.ok:
        raise Outcome(
            Status.BLOCKED, f"cannot add a work tree to rebuild {what} in: {added.last_line()}"
        )
    try:
        yield Git(path, git.log)
    finally:
        drop_worktree(git, path)


def drop_worktree(git: Git, path: Path) -> None:
    if not path.exists():
        return
    git("worktree", "remove", "--force", "--force", str(path))
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    git("worktree", "prune")
