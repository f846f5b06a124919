"""`workspace harness init --patches` and `harness release --patches`: the patch-series harness.

Deterministic like the tutorial's harness (the same shas on every machine), with a fork kept as
three patch branches, and releases that, in order, absorb patch 010, conflict with patch 020,
then touch no patch. The end-to-end test walks the whole tutorial path through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.patchseries import (
    flow_run,
    git,
    new_workspace,
    patch_table,
    result_of,
    write_flow,
)

from workspace_adapter.cli import main as cli_main
from workspace_adapter.patchharness import PATCH_BRANCHES, cut_patch_release, init_patch_harness

REPOS = ("upstream", "fork", "remotes/upstream.git", "remotes/origin.git", "remotes/jojo.git")


def all_refs(root: Path) -> dict[str, str]:
    return {
        name: git(root / "harness" / name, "for-each-ref", "--format=%(objectname) %(refname)")
        for name in REPOS
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("patch-harness")
    init_patch_harness(root)
    return root


def test_the_fork_is_three_patch_branches_applied_in_order(built: Path) -> None:
    fork = built / "harness" / "fork"
    assert git(fork, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split() == [
        "main",
        *PATCH_BRANCHES,
    ]
    for branch in PATCH_BRANCHES:
        assert git(fork, "merge-base", branch, "v0.1.3") == git(fork, "rev-parse", "v0.1.3")
    assert git(fork, "rev-list", "--count", "v0.1.3..patch/020-fork-banner") == "2"
    # main is v0.1.3 plus each branch's commits, in order: the same patches, by patch id.
    picked = git(fork, "log", "--reverse", "--format=%s", "v0.1.3..main").splitlines()
    assert picked == [
        line
        for b in PATCH_BRANCHES
        for line in git(fork, "log", "--reverse", "--format=%s", f"v0.1.3..{b}").splitlines()
    ]
    for remote in ("origin", "jojo"):
        bare = built / "harness" / "remotes" / f"{remote}.git"
        for ref in ("main", *PATCH_BRANCHES):
            assert git(bare, "rev-parse", ref) == git(fork, "rev-parse", ref)
    assert git(fork, "status", "--porcelain") == ""


def test_two_builds_give_the_same_shas(tmp_path: Path, built: Path) -> None:
    """Pinned shas, the same on every machine. (The tutorial harness keeps its own pinned
    shas in test_harness.py: building the patch fork beside it changed none of them.)"""
    init_patch_harness(tmp_path / "again")
    assert all_refs(tmp_path / "again") == all_refs(built)
    fork = built / "harness" / "fork"
    assert git(fork, "rev-parse", "main") == "eddaec87025bba4a9add0467a6bbfde8d1840d58"
    assert git(fork, "rev-parse", PATCH_BRANCHES[1]) == "3dc96ecf3e1ce046c5796edb14e5bf4391d3269c"


def test_releases_come_in_order_and_are_deterministic(tmp_path: Path, built: Path) -> None:
    cases = []
    for root in (tmp_path / "a", tmp_path / "b"):
        new_workspace(built, root, {"branches": "patch/*"})
        cases.append([cut_patch_release(root) for _ in range(3)])
    assert cases[0] == cases[1]
    assert [tag for tag, _ in cases[0]] == ["v0.1.4", "v0.1.5", "v0.1.6"]
    assert "upstreamed" in cases[0][0][1] and "conflicts" in cases[0][1][1]
    assert all_refs(tmp_path / "a") == all_refs(tmp_path / "b")
    upstream = tmp_path / "a" / "harness" / "upstream"
    # v0.1.4 carries patch 010's own commit: the same patch id, so the same change.
    fork = tmp_path / "a" / "harness" / "fork"
    git(fork, "fetch", "--quiet", "--tags", "upstream")
    assert git(fork, "cherry", "v0.1.4", PATCH_BRANCHES[0], "v0.1.3").startswith("- ")
    assert "forkBanner" not in (upstream / "index.js").read_text()


def test_the_tutorial_path_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`harness init --patches`, `harness release --patches` twice, a run on each release:
    v0.1.4 `changed` (010 upstreamed), then v0.1.5 `needs_intervention` (020 conflicts)."""
    root = tmp_path / "ws"
    assert cli_main(["harness", "init", "--patches", "--workspace-root", str(root)]) == 0
    shown = capsys.readouterr().out
    assert "patch/020-fork-banner" in shown and 'patches = { branches = "patch/*" }' in shown
    assert (
        cli_main(["--workspace-root", str(root), "harness", "release", "--patches", "--json"]) == 0
    )
    release = json.loads(capsys.readouterr().out)
    assert release["tag"] == "v0.1.4" and "upstreamed" in release["case"]
    assert (
        cli_main(
            ["--workspace-root", str(root), "harness", "release", "--patches", "--bump", "minor"]
        )
        == 2
    )
    write_flow(root, {"branches": "patch/*"})

    first = result_of(flow_run(root, "v0.1.4", "--json"))
    assert first["status"] == "changed", first["message"]
    assert patch_table(first)[PATCH_BRANCHES[0]] == "upstreamed"
    assert cli_main(["--workspace-root", str(root), "harness", "release", "--patches"]) == 0
    assert "conflicts" in capsys.readouterr().out
    second = result_of(flow_run(root, "v0.1.5", "--json"))
    assert second["status"] == "needs_intervention", second["message"]
    assert patch_table(second) == {PATCH_BRANCHES[0]: "upstreamed", PATCH_BRANCHES[1]: "conflict"}
