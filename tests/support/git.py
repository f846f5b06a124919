"""git for the tests' own moves: a fixed identity, none of the caller's GIT_* variables.

Repositories a test builds by hand start on ``main`` and get the same author and committer
everywhere, whatever the machine's or the CI's git configuration says.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from workspace_adapter.base.gitenv import no_git_env

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Person",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test Person",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(repo: Path, *args: str, check: bool = True) -> str:
    """``git ARGS`` in ``repo``; its stdout, stripped. A failure raises (``check``), naming the
    command, the folder and what git said."""
    env = no_git_env()
    env.update(IDENTITY, GIT_CONFIG_NOSYSTEM="1", GIT_EDITOR="true")
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {repo}: {done.stderr}")
    return done.stdout.strip()
