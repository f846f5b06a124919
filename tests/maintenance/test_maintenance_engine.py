"""ForkMaintenance on real repositories made by `workspace harness init` (SPEC §7)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workspace_adapter.harness import cut_release

FORK_SUBJECTS = [
    "fork: note what the fork carries",
    "fork: test forkBanner()",
    "fork: add forkBanner()",
]
ARTIFACT_KEYS = {
    "eventId",
    "repo",
    "forkRepo",
    "forkRepoFullName",
    "targetBranch",
    "releaseTag",
    "releaseSha",
    "beforeSha",
    "afterSha",
    "pushed",
    "checks",
    "candidateRefs",
    "rangeDiff",
    "commands",
    "timing",
}
FAST = ["node --test"]
Snapshot = Callable[[], dict[str, Any]]


def bare_main(root: Path, git: Any, name: str) -> str:
    return str(git(root / "harness" / "remotes" / f"{name}.git", "rev-parse", "refs/heads/main"))


def test_fixture_release_is_already_contained(
    maintain: Any, fork: Path, git: Any, fork_state: Snapshot
) -> None:
    before = fork_state()
    result = maintain("v0.1.3")
    assert result.status == "completed", result.message
    assert result.message is not None
    assert "already contains v0.1.3" in result.message
    assert "checks passed" in result.message
    art = result.artifacts
    assert set(art) == ARTIFACT_KEYS
    assert art["candidateRefs"] == [
        {
            "kind": "branch",
            "repo": "matamune-peezy/patch-moi-harness",
            "remote": "local",
            "ref": "refs/heads/main",
            "sha": before["head"],
            "pushed": False,
        }
    ]
    assert art["beforeSha"] == art["afterSha"] == before["head"]
    assert art["releaseSha"] == git(fork, "rev-parse", "v0.1.3^{commit}")
    assert [c["name"] for c in art["checks"]] == ["npm test", "npm run pack:dry-run"]
    assert all(c["status"] == "passed" for c in art["checks"])
    assert art["rangeDiff"] is None and art["pushed"] is False
    assert fork_state() == before
    assert git(fork, "status", "--porcelain") == ""
    # Every command is on record, with what the overhead measurement needs.
    for record in art["commands"]:
        assert set(record) >= {"argv", "exitCode", "seconds"}
    assert ["bash", "-c", "npm test"] in [r["argv"] for r in art["commands"]]
    timing = art["timing"]
    assert 0 < timing["commandSeconds"] <= timing["totalSeconds"]
    # A check that passed says so in one line; its output stays in the record.
    assert any(line.startswith("check    npm test: passed (") for line in maintain.lines)
    assert not any("# pass" in line for line in maintain.lines)
    assert "# pass" in next(r["stdout"] for r in art["commands"] if "npm test" in r["argv"])


def test_release_is_rebased_verified_and_range_diffed(
    workspace_root: Path, maintain: Any, fork: Path, git: Any, fork_state: Snapshot
) -> None:
    before = fork_state()
    tag = cut_release(workspace_root)
    assert tag == "v0.1.4"
    # No identity configured anywhere: the engine must supply a committer itself.
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    result = maintain(tag, fetch=True, env=env)
    assert result.status == "changed", result.message
    after = fork_state()
    assert after["branch"] == "main" and after["status"] == "" and not after["rebasing"]
    assert after["head"] != before["head"]
    art = result.artifacts
    assert art["beforeSha"] == before["head"] and art["afterSha"] == after["head"]
    release = git(fork, "rev-parse", "v0.1.4^{commit}")
    assert art["releaseSha"] == release
    assert git(fork, "log", "--format=%s", f"{release}..main").splitlines() == FORK_SUBJECTS
    assert git(fork, "rev-parse", "main~3") == release
    assert "fork: add forkBanner()" in art["rangeDiff"]
    assert [c["status"] for c in art["checks"]] == ["passed", "passed"]
    assert git(fork, "log", "-1", "--format=%cn", "main") == "workspace-adapter"
    assert "rebased 3 fork commits" in (result.message or "")
    # Push is off: the bare remotes still hold the old fork.
    assert bare_main(workspace_root, git, "origin") == before["head"]


def test_conflicting_release_needs_intervention_and_leaves_fork_as_it_was(
    workspace_root: Path, maintain: Any, fork: Path, git: Any, fork_state: Snapshot
) -> None:
    before = fork_state()
    cut_release(workspace_root, conflict=True)
    result = maintain("v0.1.4", fetch=True, verify_commands=FAST)
    assert result.status == "needs_intervention", result.message
    message = result.message or ""
    first_fork_commit = git(fork, "rev-parse", "main~2")
    assert "index.js" in message
    assert "fork: add forkBanner()" in message
    assert first_fork_commit[:12] in message
    assert "\n" not in message
    assert fork_state() == before
    assert not (fork / ".git" / "REBASE_HEAD").exists()
    assert result.artifacts["checks"] == []
    assert result.artifacts["afterSha"] == before["head"]
    # Its lines: fetch, then the rebase that stopped, naming the commit and the file.
    assert [line.split()[0] for line in maintain.lines] == ["fetch", "rebase"]
    assert maintain.lines[1].startswith(
        f"rebase   v0.1.4: stopped at {first_fork_commit[:12]} 'fork: add forkBanner()', "
        "conflicts in index.js; aborted ("
    )


def test_failing_check_after_rebase_keeps_a_candidate_and_resets_the_branch(
    workspace_root: Path, maintain: Any, fork: Path, git: Any, fork_state: Snapshot
) -> None:
    before = fork_state()
    cut_release(workspace_root)
    result = maintain(
        "v0.1.4", fetch=True, verify_commands=["node --test", "echo broken >&2; exit 7", "true"]
    )
    assert result.status == "needs_intervention", result.message
    assert fork_state() == before
    candidate = git(fork, "rev-parse", "refs/workspace/candidates/v0.1.4")
    assert candidate != before["head"]
    assert git(fork, "rev-parse", f"{candidate}~3") == git(fork, "rev-parse", "v0.1.4^{commit}")
    art = result.artifacts
    assert [c["status"] for c in art["checks"]] == ["passed", "failed", "skipped"]
    assert art["candidateRefs"] == [
        {
            "kind": "candidate",
            "repo": "matamune-peezy/patch-moi-harness",
            "remote": "local",
            "ref": "refs/workspace/candidates/v0.1.4",
            "sha": candidate,
            "pushed": False,
        }
    ]
    assert art["afterSha"] == before["head"]
    assert "exit 7" in (result.message or "")
    # The failed check's line, then its output's tail; nothing of the ones that passed.
    said = "check    echo broken >&2; exit 7: failed (exit 7) ("
    failed = next(i for i, line in enumerate(maintain.lines) if line.startswith(said))
    assert maintain.lines[failed + 1] == "    broken"
    assert not any("# pass" in line for line in maintain.lines)


def test_failing_check_without_rebase_needs_intervention(
    maintain: Any, fork_state: Snapshot, fork: Path, git: Any
) -> None:
    before = fork_state()
    result = maintain("v0.1.3", verify_commands=["false"])
    assert result.status == "needs_intervention"
    assert fork_state() == before
    assert git(fork, "for-each-ref", "refs/workspace") == ""


def _dirty(fork: Path, git: Any) -> None:
    (fork / "README.md").write_text("local edit\n")


def _rebase_in_progress(fork: Path, git: Any) -> None:
    git(fork, "rebase", "--exec", "false", "HEAD~1", check=False)


def _cherry_pick_in_progress(fork: Path, git: Any) -> None:
    git(fork, "cherry-pick", "HEAD~1", check=False)


def _cherry_picks_left_after_a_commit(fork: Path, git: Any) -> None:
    # Two picks, the first conflicts and is resolved with `git commit`: no CHERRY_PICK_HEAD,
    # a clean tree, and still `git status` says "Cherry-pick currently in progress".
    git(fork, "switch", "-q", "-c", "side")
    for name, text in (("conflict.txt", "side\n"), ("other.txt", "two\n")):
        (fork / name).write_text(text)
        git(fork, "add", name)
        git(fork, "commit", "-q", "-m", f"side {name}")
    git(fork, "switch", "-q", "main")
    (fork / "conflict.txt").write_text("main\n")
    git(fork, "add", "conflict.txt")
    git(fork, "commit", "-q", "-m", "main conflict.txt")
    git(fork, "cherry-pick", "side~1", "side", check=False)
    (fork / "conflict.txt").write_text("resolved\n")
    git(fork, "add", "conflict.txt")
    git(fork, "commit", "-q", "--no-edit")
    assert git(fork, "status", "--porcelain") == ""
    assert not (fork / ".git" / "CHERRY_PICK_HEAD").exists()


def _merge_in_progress(fork: Path, git: Any) -> None:
    git(fork, "switch", "-q", "-c", "side", "HEAD~1")
    git(fork, "commit", "-q", "--allow-empty", "-m", "side")
    git(fork, "switch", "-q", "main")
    git(fork, "merge", "--no-ff", "--no-commit", "side")


@pytest.mark.parametrize(
    ("prepare", "words"),
    [
        (_dirty, "uncommitted changes"),
        (_rebase_in_progress, "a rebase is in progress"),
        (_cherry_pick_in_progress, "a cherry-pick is in progress"),
        (_cherry_picks_left_after_a_commit, "a cherry-pick is in progress"),
        (_merge_in_progress, "a merge is in progress"),
    ],
    ids=["dirty", "rebase", "cherry-pick", "cherry-pick-sequence", "merge"],
)
def test_unsafe_fork_state_is_refused(
    maintain: Any,
    fork: Path,
    git: Any,
    fork_state: Snapshot,
    prepare: Callable[[Path, Any], None],
    words: str,
) -> None:
    prepare(fork, git)
    before = fork_state()
    result = maintain("v0.1.3", verify_commands=FAST)
    assert result.status == "blocked"
    assert words in (result.message or "") and "\n" not in (result.message or "")
    assert fork_state() == before
    assert result.artifacts["checks"] == []


def test_empty_folder_inside_another_repository_is_blocked(
    workspace_root: Path, maintain: Any, git: Any
) -> None:
    git(workspace_root, "init", "-q", "-b", "main")
    (workspace_root / "harness" / "empty-fork").mkdir()
    result = maintain("v0.1.3", fork_repo="harness/empty-fork")
    assert result.status == "blocked"
    assert "not its own repository" in (result.message or "")
    # The parent repository was not touched: no lock, no remote.
    assert not (workspace_root / ".git" / "workspace-maintenance.lock").exists()
    assert git(workspace_root, "remote") == ""


def test_empty_fork_repository_is_blocked_not_a_crash(maintain: Any, fork: Path, git: Any) -> None:
    shutil.rmtree(fork)
    fork.mkdir()
    git(fork, "init", "-q", "-b", "main")
    # With fetch on the tag resolves, and the run used to crash on the missing HEAD.
    result = maintain("v0.1.3", fetch=True, verify_commands=FAST)
    assert result.status == "blocked", result.message
    assert "has no commit checked out" in (result.message or "")
    assert "unexpected" not in (result.message or "")


def test_missing_fork_folder_is_blocked(maintain: Any) -> None:
    result = maintain("v0.1.3", fork_repo="harness/nowhere")
    assert result.status == "blocked"
    assert "does not exist" in (result.message or "")


def test_unknown_tag_is_blocked(maintain: Any, fork_state: Snapshot) -> None:
    before = fork_state()
    result = maintain("v9.9.9", fetch=True)
    assert result.status == "blocked"
    assert "tag v9.9.9 is not known" in (result.message or "")
    assert fork_state() == before


def test_event_for_another_repo_is_skipped(maintain: Any) -> None:
    result = maintain(payload={"repo": "someone/else", "tag": "v0.1.3"})
    assert result.status == "skipped"
    assert "someone/else" in (result.message or "")
    assert result.artifacts["commands"] == []


def test_event_without_tag_fails(maintain: Any) -> None:
    result = maintain(tag=None)
    assert result.status == "failed"
    assert "neither `tag` nor `ref`" in (result.message or "")


def test_tag_from_ref(maintain: Any) -> None:
    payload = {"repo": "peezy-tech/patch-moi-harness", "ref": "refs/tags/v0.1.3"}
    result = maintain(payload=payload, verify_commands=FAST)
    assert result.status == "completed", result.message
    assert result.artifacts["releaseTag"] == "v0.1.3"


def test_invalid_tag_name_fails(maintain: Any) -> None:
    result = maintain("bad..tag")
    assert result.status == "failed"
    assert "not a valid git tag name" in (result.message or "")


def test_leaked_git_env_does_not_redirect_git(
    workspace_root: Path, maintain: Any, fork_state: Snapshot, git: Any
) -> None:
    upstream = workspace_root / "harness" / "upstream"
    before = fork_state()
    cut_release(workspace_root)
    upstream_head = git(upstream, "rev-parse", "HEAD")
    leaked = {
        **os.environ,
        "GIT_DIR": str(upstream / ".git"),
        "GIT_WORK_TREE": str(upstream),
        "GIT_INDEX_FILE": str(upstream / ".git" / "index"),
    }
    result = maintain("v0.1.4", fetch=True, verify_commands=FAST, env=leaked)
    assert result.status == "changed", result.message
    after = fork_state()
    assert after["head"] != before["head"] and after["status"] == ""
    assert git(upstream, "rev-parse", "HEAD") == upstream_head
    assert git(upstream, "status", "--porcelain") == ""
