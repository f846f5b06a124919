"""`workspace harness init|release` (SPEC §8): deterministic, relocatable local repos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.git import git

from workspace_adapter.base.errors import UserError
from workspace_adapter.cli import main as cli_main
from workspace_adapter.harness import cut_release, init_harness, latest_version

REPOS = ("upstream", "fork", "remotes/upstream.git", "remotes/origin.git", "remotes/jojo.git")


def all_refs(root: Path) -> dict[str, str]:
    return {
        name: git(root / "harness" / name, "for-each-ref", "--format=%(objectname) %(refname)")
        for name in REPOS
    }


def test_layout_remotes_and_history(workspace_root: Path) -> None:
    harness = workspace_root / "harness"
    for name in ("upstream", "origin", "jojo"):
        assert (
            git(harness / "remotes" / f"{name}.git", "rev-parse", "--is-bare-repository") == "true"
        )
    upstream, fork = harness / "upstream", harness / "fork"
    assert git(upstream, "tag", "--list").split() == ["v0.1.0", "v0.1.1", "v0.1.2", "v0.1.3"]
    assert git(upstream, "remote", "get-url", "origin") == "../remotes/upstream.git"
    assert {r: git(fork, "remote", "get-url", r) for r in ("origin", "upstream", "jojo")} == {
        "origin": "../remotes/origin.git",
        "upstream": "../remotes/upstream.git",
        "jojo": "../remotes/jojo.git",
    }
    assert git(fork, "rev-parse", "main~3") == git(fork, "rev-parse", "v0.1.3^{commit}")
    assert len(git(fork, "log", "--format=%s", "v0.1.3..main").splitlines()) == 3
    # The fork commits all change the same package.
    changed = git(fork, "diff", "--name-only", "v0.1.3", "main").split()
    assert changed == ["README.md", "index.js", "test/fork.test.js"]
    for name in ("origin", "jojo"):
        bare = harness / "remotes" / f"{name}.git"
        assert git(bare, "rev-parse", "main") == git(fork, "rev-parse", "main")
    package = json.loads((fork / "package.json").read_text())
    assert package["name"] == "patch-moi-harness" and package["version"] == "0.1.3"
    assert package["scripts"] == {"test": "node --test", "pack:dry-run": "npm pack --dry-run"}
    assert "dependencies" not in package
    assert git(fork, "status", "--porcelain") == ""


def test_two_builds_give_the_same_shas(tmp_path: Path, harness_template: Path) -> None:
    init_harness(tmp_path)
    assert all_refs(tmp_path) == all_refs(harness_template)
    # Pinned: the same on every machine (a change to the harness content changes these).
    assert git(tmp_path / "harness" / "upstream", "rev-parse", "v0.1.3") == (
        "78cbd150014cc5eaed6a85414a8ebc94c1364566"
    )
    assert git(tmp_path / "harness" / "fork", "rev-parse", "main") == (
        "55a363f9b522b66759588f589c161e58b696a0cc"
    )


def test_the_operators_git_settings_do_not_change_the_shas(
    tmp_path: Path, harness_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings passed to git in the environment (kept for every other git command of ours)
    are dropped here: this one would write an encoding header into every commit."""
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "i18n.commitEncoding")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "ISO-8859-1")
    init_harness(tmp_path)
    monkeypatch.delenv("GIT_CONFIG_COUNT")
    assert all_refs(tmp_path) == all_refs(harness_template)


def test_copied_harness_still_fetches(workspace_root: Path) -> None:
    moved = workspace_root / "elsewhere"
    shutil.copytree(workspace_root / "harness", moved / "harness")
    shutil.rmtree(workspace_root / "harness")
    fork = moved / "harness" / "fork"
    git(fork, "fetch", "-q", "upstream")
    git(fork, "fetch", "-q", "origin")


def test_init_refuses_an_existing_harness(workspace_root: Path) -> None:
    with pytest.raises(UserError, match="pass --force"):
        init_harness(workspace_root)


def test_init_force_rebuilds(workspace_root: Path) -> None:
    cut_release(workspace_root)
    init_harness(workspace_root, force=True)
    assert latest_version(workspace_root / "harness" / "upstream") == (0, 1, 3)
    assert not [p for p in workspace_root.iterdir() if p.name.startswith(".harness-")]


def test_release_bumps_commits_tags_and_pushes(workspace_root: Path) -> None:
    upstream = workspace_root / "harness" / "upstream"
    bare = workspace_root / "harness" / "remotes" / "upstream.git"
    assert cut_release(workspace_root) == "v0.1.4"
    assert cut_release(workspace_root, bump="minor") == "v0.2.0"
    assert json.loads((upstream / "package.json").read_text())["version"] == "0.2.0"
    assert "## 0.2.0" in (upstream / "CHANGELOG.md").read_text()
    assert git(bare, "rev-parse", "v0.2.0^{commit}") == git(upstream, "rev-parse", "HEAD")
    assert git(bare, "rev-parse", "main") == git(upstream, "rev-parse", "HEAD")
    assert git(upstream, "status", "--porcelain") == ""


def test_release_is_deterministic(workspace_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(workspace_root / "harness", other / "harness")
    cut_release(workspace_root, conflict=True)
    cut_release(other, conflict=True)
    assert all_refs(workspace_root) == all_refs(other)


def test_conflict_release_touches_the_first_fork_commits_line(workspace_root: Path) -> None:
    cut_release(workspace_root, conflict=True)
    upstream = workspace_root / "harness" / "upstream"
    index = (upstream / "index.js").read_text()
    assert "module.exports = { greet, add, slugify, clamp, version }; // as of v0.1.4" in index
    fork_index = (workspace_root / "harness" / "fork" / "index.js").read_text()
    assert "module.exports = { greet, add, slugify, clamp, forkBanner };" in fork_index


def test_release_without_init(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="run `workspace harness init` first"):
        cut_release(tmp_path)


def test_cli_init_and_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["harness", "init", "--workspace-root", str(tmp_path)]) == 0
    assert "harness/fork" in capsys.readouterr().out
    assert cli_main(["harness", "init", "--workspace-root", str(tmp_path)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert cli_main(["--workspace-root", str(tmp_path), "harness", "release", "--conflict"]) == 0
    out = capsys.readouterr().out
    sha = git(tmp_path / "harness" / "upstream", "rev-parse", "HEAD")
    assert f"v0.1.4 at {sha[:12]}" in out
