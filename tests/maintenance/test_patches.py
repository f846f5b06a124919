"""Patch stacks: a fork maintained as upstream plus an ordered series of patches.

Real git repositories: the patch harness (``workspace harness init --patches``) built once per
session, its two releases cut (v0.1.4 absorbs patch 010, v0.1.5 conflicts with patch 020), and
copied per test. The acceptance runs go through ``workspace flow run`` and the real step
subprocess; the bad-input and publishing cases drive the engine in-process, which is faster.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support.patchseries import (
    SERIES_FILES,
    WORKSPACE,
    build_template,
    commit_series_folder,
    expected_tree,
    flow_run,
    fork_refs,
    git,
    new_workspace,
    patch_table,
    result_of,
)

from workspace_adapter.commands import attempts
from workspace_adapter.events import FlowResult
from workspace_adapter.maintenance.engine import ForkMaintenance
from workspace_adapter.maintenance.patchtable import patch_lines
from workspace_adapter.maintenance.settings import (
    FlowConfig,
    ForkEntry,
    ForkFields,
    load_config,
    resolve_settings,
)
from workspace_adapter.patchharness import PATCH_BRANCHES
from workspace_adapter.service.schema import Attempt

P010, P020, P030 = PATCH_BRANCHES
BRANCHES = {"branches": "patch/*"}
# workspace.toml's fork entry takes `patches` once its schema (local/) carries the key.
fork_entry_takes_patches = pytest.mark.skipif(
    "patches" not in ForkFields.__struct_fields__,
    reason="workspace.toml's [[workspace.forks]] has no `patches` key yet",
)
FORK_ENTRY = """
[workspace]
name = "patches"

[[workspace.forks]]
name = "harness"
path = "harness/fork"
repo = "peezy-tech/patch-moi-harness"
upstream_url = "harness/remotes/upstream.git"
verify_commands = ["node --test"]
"""


@pytest.fixture(scope="session")
def patch_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The patch harness with releases v0.1.4 and v0.1.5, built once per session."""
    return build_template(tmp_path_factory.mktemp("patch-template"))


@pytest.fixture
def root(tmp_path: Path, patch_template: Path) -> Iterator[Path]:
    yield new_workspace(patch_template, tmp_path / "ws", BRANCHES)


def upstream_sha(root: Path, tag: str) -> str:
    return git(root / "harness" / "upstream", "rev-parse", f"{tag}^{{commit}}")


def maintain(root: Path, tag: str, patches: dict[str, Any], **config: Any) -> FlowResult:
    """The engine in-process on ``root``'s harness fork; fetch on, push off unless given."""
    options = config.pop("options", None)
    merged = {
        "fetch": True,
        "push": False,
        "verify_commands": ["node --test"],
        "patches": patches,
        **config,
    }
    payload: dict[str, Any] = {"repo": "peezy-tech/patch-moi-harness", "tag": tag}
    if options:
        payload["options"] = options
    settings = resolve_settings(load_config(merged), workspace_root=root, payload=payload, env={})
    event = {"id": f"test:{tag}", "type": "upstream.release", "payload": payload}
    return ForkMaintenance(settings, event, env={}).run()


# -- acceptance 1 and 2: a branch series, through `workspace flow run` ---------------------------


def test_a_release_that_absorbs_patch_1_rebuilds_main_from_patches_2_and_3(root: Path) -> None:
    """Acceptance 1: v0.1.4 takes patch 010 → `changed`, 010 `upstreamed`, and the rebuilt
    main's tree is v0.1.4 + patches 020 and 030; each refreshed patch gets a candidate ref."""
    fork = root / "harness" / "fork"
    before = git(fork, "rev-parse", "main")
    done = flow_run(root, "v0.1.4", "--json")
    assert done.returncode == 0, done.stderr
    result = result_of(done)
    assert result["status"] == "changed", result["message"]
    assert patch_table(result) == {P010: "upstreamed", P020: "applied", P030: "applied"}
    after = git(fork, "rev-parse", "main")
    assert after != before and result["artifacts"]["afterSha"] == after
    assert git(fork, "rev-parse", "main^{tree}") == expected_tree(fork, "v0.1.4", [P020, P030])
    assert git(fork, "merge-base", "main", "v0.1.4") == upstream_sha(root, "v0.1.4")
    refs = {r["ref"]: r for r in result["artifacts"]["candidateRefs"] if r["kind"] == "patch"}
    for branch in (P020, P030):
        ref = f"refs/workspace/candidates/v0.1.4/{branch}"
        assert git(fork, "rev-parse", ref) == refs[ref]["sha"]
        # Refreshed on the release alone: the release, then that patch's commits.
        assert git(fork, "merge-base", ref, "v0.1.4") == upstream_sha(root, "v0.1.4")
        count = git(fork, "rev-list", "--count", f"v0.1.4..{ref}")
        assert count == git(fork, "rev-list", "--count", f"v0.1.3..{branch}")
    assert git(fork, "for-each-ref", "refs/workspace/candidates/v0.1.4/patch/010-add-numbers") == ""
    assert fork_refs(fork)["status"] == "" and fork_refs(fork)["worktrees"] == 1


def test_a_release_that_conflicts_with_patch_2_is_reported_and_writes_nothing(root: Path) -> None:
    """Acceptance 2: v0.1.5 conflicts with patch 020 → `needs_intervention`, the table names
    020, index.js and the upstream release commit; with --continue-past-conflicts 030 is
    reported too; the fork checkout and every patch/* ref stay exactly as they were."""
    fork = root / "harness" / "fork"
    found = fork_refs(fork)
    done = flow_run(root, "v0.1.5", "--json")
    assert done.returncode == 3, done.stderr
    result = result_of(done)
    assert result["status"] == "needs_intervention"
    assert patch_table(result) == {P010: "upstreamed", P020: "conflict"}
    conflict = result["artifacts"]["patches"][1]
    assert conflict["files"] == ["index.js"]
    assert conflict["hunks"] == ["index.js:23-25"]
    assert conflict["upstreamCommits"] == [
        {"sha": upstream_sha(root, "v0.1.5"), "subject": "Release v0.1.5: Export version()."}
    ]
    assert f"stopped at {P020}: conflict in index.js" in result["message"]
    assert "1 patch after it not tried" in result["message"]
    assert fork_refs(fork) == found

    done = flow_run(root, "v0.1.5", "--continue-past-conflicts")
    assert done.returncode == 3, done.stderr
    table = [line.split() for line in done.stdout.splitlines() if line.startswith("  patch ")]
    assert [words[1:3] for words in table] == [
        [P010, "upstreamed"],
        [P020, "conflict"],
        [P030, "applied"],
    ]
    assert f"in index.js with upstream {upstream_sha(root, 'v0.1.5')[:12]}" in done.stdout
    assert "needs_intervention" in done.stdout
    assert fork_refs(fork) == found


# -- acceptance 3: the same two cases with a series folder ---------------------------------------


@pytest.mark.parametrize("style", ["diff", "mail"])
def test_a_series_folder_of_plain_diffs_or_mails(root: Path, style: str) -> None:
    """Acceptance 3: the series kept as a folder (plain diffs: `git apply --3way`; mails from
    `git format-patch`: `git am -3`): v0.1.5 conflicts at 020 and writes nothing; v0.1.4
    rebuilds main as v0.1.4 + 020 + 030, then the folder refreshed (010 commented out)."""
    fork = root / "harness" / "fork"
    commit_series_folder(fork, style)
    (root / "flows" / "patch-series" / "flow.toml").write_text(
        (root / "flows" / "patch-series" / "flow.toml")
        .read_text()
        .replace('patches = { branches = "patch/*" }', 'patches = { series = "patches" }')
    )
    files = dict(zip((P010, P020, P030), SERIES_FILES, strict=True))
    found = fork_refs(fork)
    done = flow_run(root, "v0.1.5", "--json", "--continue-past-conflicts")
    result = result_of(done)
    assert result["status"] == "needs_intervention", result["message"]
    assert patch_table(result) == {
        files[P010]: "upstreamed",
        files[P020]: "conflict",
        files[P030]: "applied",
    }
    conflict = result["artifacts"]["patches"][1]
    assert conflict["files"] == ["index.js"]
    assert [c["sha"] for c in conflict["upstreamCommits"]] == [upstream_sha(root, "v0.1.5")]
    assert fork_refs(fork) == found

    done = flow_run(root, "v0.1.4", "--json")
    result = result_of(done)
    assert result["status"] == "changed", result["message"]
    assert patch_table(result) == {
        files[P010]: "upstreamed",
        files[P020]: "applied",
        files[P030]: "applied",
    }
    assert git(fork, "rev-parse", "main~1^{tree}") == expected_tree(fork, "v0.1.4", [P020, P030])
    series = (fork / "patches" / "series").read_text().splitlines()
    assert series[1:] == [f"# {SERIES_FILES[0]}: upstreamed in v0.1.4", *SERIES_FILES[1:]]
    assert not (fork / "patches" / SERIES_FILES[0]).exists()
    before = result["artifacts"]["beforeSha"]
    for name in SERIES_FILES[1:]:  # applied as they were: kept byte for byte
        assert git(fork, "diff", "--quiet", before, "main", "--", f"patches/{name}") == ""
    [series_ref] = [r for r in result["artifacts"]["candidateRefs"] if r["kind"] == "series"]
    assert series_ref["ref"] == "refs/workspace/candidates/v0.1.4/series"
    assert git(fork, "rev-parse", series_ref["ref"]) == git(fork, "rev-parse", "main")


# -- more statuses and outcomes, in-process ------------------------------------------------------


def test_a_patch_that_needs_a_three_way_merge_is_merged_and_refreshed(root: Path) -> None:
    """An upstream change in a hunk's context: patch 020 no longer applies as it is, a
    three-way merge makes it `merged`, and its refreshed branch carries that merge."""
    upstream = root / "harness" / "upstream"
    git(upstream, "checkout", "--quiet", "-b", "side", "v0.1.4")
    index = (upstream / "index.js").read_text()
    line = "  return Math.min(Math.max(value, min), max);"
    (upstream / "index.js").write_text(index.replace(line, line + " // bounds"))
    git(upstream, "commit", "--quiet", "-am", "clamp: a comment")
    git(upstream, "tag", "v0.1.6-rc")
    git(upstream, "push", "--quiet", "origin", "v0.1.6-rc")
    result = maintain(root, "v0.1.6-rc", BRANCHES)
    assert result.status == "changed", result.message
    assert patch_table(msgspec.to_builtins(result)) == {
        P010: "upstreamed",
        P020: "merged",
        P030: "applied",
    }
    fork = root / "harness" / "fork"
    ref = "refs/workspace/candidates/v0.1.6-rc/patch/020-fork-banner"
    assert "// bounds" in git(fork, "show", f"{ref}:index.js")
    assert "forkBanner" in git(fork, "show", f"{ref}:index.js")


def test_the_same_release_again_is_completed_and_moves_nothing(root: Path) -> None:
    """Once main is v0.1.4 + its patches, a second run finds the same tree: `completed`."""
    assert maintain(root, "v0.1.4", BRANCHES).status == "changed"
    fork = root / "harness" / "fork"
    found = fork_refs(fork)
    again = maintain(root, "v0.1.4", BRANCHES)
    assert again.status == "completed", again.message
    assert "nothing to rebuild" in again.message
    assert fork_refs(fork) == found


def test_a_failed_check_keeps_the_rebuild_as_a_candidate(root: Path) -> None:
    """A check that fails after the rebuild: main goes back, the rebuilt commit is kept as
    `<tag>/rebuilt` beside the refreshed patches."""
    fork = root / "harness" / "fork"
    before = git(fork, "rev-parse", "main")
    result = maintain(root, "v0.1.4", BRANCHES, verify_commands=["false"])
    assert result.status == "needs_intervention"
    assert git(fork, "rev-parse", "main") == before
    kept = git(fork, "rev-parse", "refs/workspace/candidates/v0.1.4/rebuilt")
    assert git(fork, "rev-parse", f"{kept}^{{tree}}") == expected_tree(fork, "v0.1.4", [P020, P030])
    kinds = sorted(r["kind"] for r in result.artifacts["candidateRefs"])
    assert kinds == ["candidate", "patch", "patch"]


def test_push_moves_main_and_the_patch_branches_on_every_remote(root: Path) -> None:
    """Push on: each remote gets main and the refreshed patch branches in one atomic push."""
    result = maintain(root, "v0.1.4", BRANCHES, push=True, push_remotes=["origin", "jojo"])
    assert result.status == "changed", result.message
    fork = root / "harness" / "fork"
    for remote in ("origin", "jojo"):
        bare = root / "harness" / "remotes" / f"{remote}.git"
        assert git(bare, "rev-parse", "main") == git(fork, "rev-parse", "main")
        for branch in (P020, P030):
            ref = f"refs/workspace/candidates/v0.1.4/{branch}"
            assert git(bare, "rev-parse", branch) == git(fork, "rev-parse", ref)
        assert git(bare, "rev-parse", P010) == git(fork, "rev-parse", P010)
    pushed = [r for r in result.artifacts["candidateRefs"] if r["remote"] != "local"]
    assert all(r["pushed"] for r in pushed) and len(pushed) == 6


def test_a_moved_patch_branch_stops_the_push_on_every_remote(root: Path) -> None:
    """A remote's patch branch is not where the run read it: `blocked`, and no remote gets
    anything, neither main nor any patch branch (all or none)."""
    fork = root / "harness" / "fork"
    origin = root / "harness" / "remotes" / "origin.git"
    git(origin, "update-ref", f"refs/heads/{P030}", f"refs/heads/{P020}")
    git(fork, "fetch", "--quiet", "--tags", "upstream")  # fetch is off: the tag must be here
    remotes = root / "harness" / "remotes"
    found = {r: git(remotes / f"{r}.git", "for-each-ref") for r in ("origin", "jojo")}
    result = maintain(
        root, "v0.1.4", BRANCHES, push=True, push_remotes=["origin", "jojo"], fetch=False
    )
    assert result.status == "blocked", result.message
    assert "remote moved: origin's refs/heads/patch/030-fork-readme" in result.message
    assert {r: git(remotes / f"{r}.git", "for-each-ref") for r in found} == found
    # As in rebase mode: the verified rebuild stays on the local branch, for the next push.
    assert git(fork, "rev-parse", "main") == result.artifacts["afterSha"]


# -- bad input -----------------------------------------------------------------------------------


def test_a_glob_that_matches_no_branch_is_blocked(root: Path) -> None:
    result = maintain(root, "v0.1.4", {"branches": "topic/*"})
    assert result.status == "blocked"
    assert "patches.branches = 'topic/*' matches no branch of harness/fork" in result.message


def test_a_listed_branch_that_does_not_exist_is_blocked(root: Path) -> None:
    result = maintain(root, "v0.1.4", {"branches": [P020, "patch/999-gone"]})
    assert result.status == "blocked"
    assert "patches.branches[1]: there is no branch 'patch/999-gone'" in result.message


def test_a_branch_with_no_commits_of_its_own_is_blocked(root: Path) -> None:
    fork = root / "harness" / "fork"
    git(fork, "branch", "patch/040-empty", "v0.1.3")
    result = maintain(root, "v0.1.4", BRANCHES)
    assert result.status == "blocked"
    assert "patch branch patch/040-empty has no commits of its own" in result.message


@pytest.mark.parametrize(
    ("line", "content", "said"),
    [
        ("050-gone.patch", None, "patches/series:5: patch file 050-gone.patch does not exist"),
        (
            "050-notes.patch",
            "just some notes\n",
            "patches/series:5: 050-notes.patch is not a patch",
        ),
    ],
)
def test_a_series_line_that_is_no_patch_is_blocked(
    root: Path, line: str, content: str | None, said: str
) -> None:
    fork = root / "harness" / "fork"
    commit_series_folder(fork, "diff")
    series = fork / "patches" / "series"
    series.write_text(series.read_text() + line + "\n")
    if content is not None:
        (fork / "patches" / line).write_text(content)
    git(fork, "add", "patches")
    git(fork, "commit", "--quiet", "-m", "patches: one more")
    found = fork_refs(fork)
    result = maintain(root, "v0.1.4", {"series": "patches"})
    assert result.status == "blocked"
    assert said in result.message
    assert fork_refs(fork) == found


def test_a_series_folder_that_is_not_committed_is_blocked(root: Path) -> None:
    result = maintain(root, "v0.1.4", {"series": "debian/patches"})
    assert result.status == "blocked"
    assert "debian/patches/series is not a committed file of main" in result.message


@pytest.mark.parametrize(
    ("patches", "said"),
    [
        ({}, "give `branches`"),
        ({"branches": "patch/*", "series": "p"}, "not both"),
        ({"branches": []}, "`branches` must name at least one branch"),
        ({"branches": "patch/[0-9"}, "a '[' is not closed"),
        ({"branches": "patch/ x*"}, "is not a usable glob"),
        ({"branches": ["patch/a", "patch/a"]}, "names 'patch/a' twice"),
        ({"branches": ["patch/*"]}, "is a glob; a list names its branches exactly"),
        ({"series": "../elsewhere"}, "must be a folder inside the fork checkout"),
        ({"series": "p", "order": 1}, "unknown field `order`"),
    ],
)
def test_a_series_the_config_gets_wrong_names_the_key(patches: dict[str, Any], said: str) -> None:
    """Mistakes visible from the config alone are validation errors of the fork entry."""
    entry = {"name": "harness", "path": "/srv/fork", "patches": patches}
    with pytest.raises(msgspec.ValidationError, match=r"at `\$.patches") as info:
        msgspec.convert(entry, ForkEntry)
    assert said in str(info.value)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"patches": patches}, FlowConfig)


def test_a_worktree_left_by_a_killed_run_is_replaced(root: Path) -> None:
    """The rebuild's work tree has a fixed place; one a killed run left is removed first."""
    fork = root / "harness" / "fork"
    git(fork, "worktree", "add", "--detach", "--quiet", ".git/workspace-rebuild", "v0.1.3")
    result = maintain(root, "v0.1.4", BRANCHES)
    assert result.status == "changed", result.message
    assert git(fork, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert not (fork / ".git" / "workspace-rebuild").exists()


def test_without_a_series_the_rebase_mode_reports_no_patches(root: Path) -> None:
    """Rebase mode is unchanged: no `patches` artifact, the fork rebased as before."""
    fork = root / "harness" / "fork"
    shutil.rmtree(root / "flows")
    settings = resolve_settings(
        load_config({"fetch": True, "push": False, "verify_commands": ["node --test"]}),
        workspace_root=root,
        payload={"repo": "peezy-tech/patch-moi-harness", "tag": "v0.1.4"},
        env={},
    )
    event = {"id": "t", "payload": {"repo": "peezy-tech/patch-moi-harness", "tag": "v0.1.4"}}
    result = ForkMaintenance(settings, event, env={}).run()
    assert "patches" not in result.artifacts
    assert result.status == "changed", result.message
    assert result.message.startswith("rebased 3 fork commits of main onto v0.1.4")
    assert git(fork, "status", "--porcelain") == ""


# -- the series declared in workspace.toml's fork entry -------------------------------------------


@fork_entry_takes_patches
def test_a_fork_entry_declares_the_series_for_the_builtin_flow(root: Path) -> None:
    """`[[workspace.forks]] patches = {...}`: `workspace flow run fork-maintenance --fork
    harness --tag v0.1.5 --continue-past-conflicts` reports every patch of the series."""
    shutil.rmtree(root / "flows")
    (root / "workspace.toml").write_text(FORK_ENTRY + 'patches = { branches = "patch/*" }\n')
    argv = ["flow", "run", "fork-maintenance", "--fork", "harness", "--tag", "v0.1.5"]
    done = subprocess.run(
        [*WORKSPACE, "--workspace-root", str(root), *argv, "--continue-past-conflicts", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    result = result_of(done)
    assert result["status"] == "needs_intervention", result["message"]
    assert patch_table(result) == {P010: "upstreamed", P020: "conflict", P030: "applied"}


@fork_entry_takes_patches
@pytest.mark.parametrize(
    ("patches", "said"),
    [
        ("{ branches = [] }", "`branches` must name at least one branch"),
        ('{ branches = "patch/[0-9" }', "a '[' is not closed"),
        ('{ branches = ["a"], series = "p" }', "not both"),
    ],
)
def test_a_fork_entry_with_a_bad_series_is_a_config_error(
    tmp_path: Path, patches: str, said: str
) -> None:
    """Exit 2 and one line naming the file, the line and `workspace.forks[0].patches`."""
    (tmp_path / "workspace.toml").write_text(FORK_ENTRY + f"patches = {patches}\n")
    done = subprocess.run(
        [*WORKSPACE, "--workspace-root", str(tmp_path), "tasks"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    line = FORK_ENTRY.count("\n") + 1
    assert f"workspace.toml:{line}: workspace.forks[0].patches: " in done.stderr
    assert said in done.stderr


# -- the table people read -------------------------------------------------------------------------


CONFLICT_ENTRY = {
    "name": "patch/020-fork-banner",
    "status": "conflict",
    "files": ["index.js"],
    "upstreamCommits": [{"sha": "ba921f3561c422252bbd6ec82a4c08574b79ba83", "subject": "v\x1b[2J"}],
}


def test_the_patch_table_names_a_conflicts_files_and_commits_and_escapes_stored_text() -> None:
    lines = patch_lines([{"name": P010, "status": "upstreamed"}, CONFLICT_ENTRY])
    assert lines[0] == f"patch   {P010}  upstreamed"
    assert lines[1].startswith(f"patch   {P020}  conflict in index.js with upstream ba921f3561c4")
    assert "\x1b" not in lines[1] and "\\x1b" in lines[1]
    assert patch_lines(None) == [] and patch_lines("garbage") == []


ATTEMPT = {
    "id": "att_1",
    "event_id": "e",
    "operation": "dispatch",
    "status": "needs_intervention",
    "upstream_repo": "peezy-tech/patch-moi-harness",
    "upstream_tag": "v0.1.5",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}


def test_attempts_shows_one_line_for_an_attempt_without_patches() -> None:
    attempt = Attempt(**ATTEMPT)
    assert attempts.table(attempt) == [attempts.summary(attempt)]


def test_attempts_lists_the_patches_of_an_attempt_that_keeps_them() -> None:
    """`workspace attempts`: an attempt's line, then its patches when its record has them."""
    attempt = Attempt(**ATTEMPT, patches=[CONFLICT_ENTRY])
    assert attempts.table(attempt)[1].startswith(f"  patch   {P020}  conflict in index.js")
