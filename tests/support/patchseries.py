"""The patch-series harness for tests: built once, copied per test, driven through the CLI.

``build_template`` makes ``harness/`` with the patch fork and cuts both of its releases
(v0.1.4 absorbs patch 010, v0.1.5 conflicts with patch 020); the fork is still at v0.1.3 plus
its patches, so a test runs either release on it. ``new_workspace`` copies that into a test's
folder with a flow package (``flows/patch-series``) whose ``[config]`` declares the series, so
``workspace flow run patch-series`` runs the real step on it. ``commit_series_folder`` turns
the fork into one that keeps its series as a folder of patch files instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from support.git import git
from workspace_adapter.patchharness import PATCH_BRANCHES, cut_patch_release, init_patch_harness

WORKSPACE = (sys.executable, "-m", "workspace_adapter")
REPO = "peezy-tech/patch-moi-harness"
FLOW = "patch-series"
FAST_CHECKS = ["node --test"]
# The series folder's file for each patch branch, in order.
SERIES_FILES = ("010-add-numbers.patch", "020-fork-banner.patch", "030-fork-readme.patch")


def build_template(root: Path) -> Path:
    """``root/harness``: the patch fork, and upstream releases v0.1.4 and v0.1.5."""
    init_patch_harness(root)
    assert [cut_patch_release(root)[0] for _ in range(2)] == ["v0.1.4", "v0.1.5"]
    return root


def flow_toml(patches: dict[str, Any], **config: Any) -> str:
    """A flow package serving the harness fork with ``patches``; ``config`` adds keys."""
    settings = {
        "fork_repo": "harness/fork",
        "upstream_repo_url": "harness/remotes/upstream.git",
        "expected_repo": REPO,
        "fetch": True,
        "push": False,
        "verify_commands": FAST_CHECKS,
        **config,
    }
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    inline = ", ".join(f"{key} = {json.dumps(value)}" for key, value in patches.items())
    lines.append(f"patches = {{ {inline} }}")
    return (
        f'name = "{FLOW}"\nversion = "0.1.0"\n\n[config]\n'
        + "\n".join(lines)
        + textwrap.dedent(
            """

            [[steps]]
            name = "maintain"
            runner = "python"
            script = "step.py"
            timeout_ms = 60000

            [steps.trigger]
            type = "upstream.release"
            """
        )
    )


def write_flow(root: Path, patches: dict[str, Any], **config: Any) -> None:
    folder = root / "flows" / FLOW
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.toml").write_text(flow_toml(patches, **config), encoding="utf-8")
    (folder / "step.py").write_text(
        "from workspace_adapter.maintenance.step import main\n\nraise SystemExit(main())\n",
        encoding="utf-8",
    )


def new_workspace(template: Path, root: Path, patches: dict[str, Any], **config: Any) -> Path:
    """A private copy of the template's harness with the ``patch-series`` flow package."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template / "harness", root / "harness", symlinks=True)
    write_flow(root, patches, **config)
    return root


def event_file(root: Path, tag: str, **options: Any) -> Path:
    path = root / f"release-{tag}.json"
    payload: dict[str, Any] = {"repo": REPO, "tag": tag}
    if options:
        payload["options"] = options
    event = {"id": f"test:{tag}", "type": "upstream.release", "source": "test", "payload": payload}
    path.write_text(json.dumps(event), encoding="utf-8")
    return path


def flow_run(root: Path, tag: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """``workspace flow run patch-series --event <release of tag> FLAGS`` in ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "CODEX_FLOW_"))}
    argv = [*WORKSPACE, "--workspace-root", str(root), "flow", "run", FLOW, *flags]
    return subprocess.run(
        [*argv, "--event", str(event_file(root, tag))],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def fork_refs(fork: Path) -> dict[str, str]:
    """The fork's branches and candidate refs, and its checkout's state (tags and
    remote-tracking refs are what fetching moves)."""
    form = "--format=%(refname) %(objectname)"
    listed = git(fork, "for-each-ref", form, "refs/heads/", "refs/workspace/")
    refs = dict(line.split() for line in listed.splitlines() if line)
    refs["HEAD"] = git(fork, "rev-parse", "HEAD")
    refs["branch"] = git(fork, "symbolic-ref", "--short", "HEAD")
    refs["status"] = git(fork, "status", "--porcelain", "--ignored")
    refs["worktrees"] = git(fork, "worktree", "list", "--porcelain").count("worktree ")
    return refs


def expected_tree(fork: Path, tag: str, branches: list[str]) -> str:
    """The tree of ``tag`` plus each branch's commits since v0.1.3, made in a scratch tree."""
    scratch = fork.parent / "expected"
    git(fork, "worktree", "add", "--detach", "--quiet", str(scratch), tag)
    try:
        for branch in branches:
            git(scratch, "cherry-pick", f"refs/tags/v0.1.3..{branch}")
        return git(scratch, "rev-parse", "HEAD^{tree}")
    finally:
        git(fork, "worktree", "remove", "--force", str(scratch))


def commit_series_folder(fork: Path, style: str, folder: str = "patches") -> None:
    """Keep the series as ``folder``: one file per patch branch, ``diff`` or ``mail`` style.

    The files are what ``git diff`` (with a description line) or ``git format-patch`` make of
    each branch; they are committed on ``main``, which already has them applied.
    """
    target = fork / folder
    target.mkdir()
    for branch, name in zip(PATCH_BRANCHES, SERIES_FILES, strict=True):
        if style == "mail":
            text = git(fork, "format-patch", "--stdout", f"refs/tags/v0.1.3..{branch}")
        else:
            diff = git(fork, "diff", "--full-index", "refs/tags/v0.1.3", branch)
            text = f"Description: {branch.removeprefix('patch/')}\n\n{diff}"
        (target / name).write_text(text + "\n", encoding="utf-8")
    (target / "series").write_text(
        "# the fork's patches, in order\n" + "\n".join(SERIES_FILES) + "\n", encoding="utf-8"
    )
    git(fork, "add", folder)
    git(fork, "commit", "--quiet", "-m", f"{folder}: the fork's patch series")


def result_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON document ``flow run --json`` prints."""
    assert done.stdout.strip(), done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def patch_table(document: dict[str, Any]) -> dict[str, str]:
    """``{name: status}`` of a result's ``artifacts.patches``."""
    return {p["name"]: p["status"] for p in document["artifacts"]["patches"]}
