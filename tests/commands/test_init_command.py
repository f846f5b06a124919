"""``workspace init``: a workspace.toml for an existing fork checkout, or the tutorial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.git import git

from workspace_adapter.cli import main
from workspace_adapter.local import configfile


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    work = tmp_path / "up-work"
    work.mkdir()
    git(work, "init", "-q")
    (work / "package.json").write_text(
        json.dumps({"name": "lib", "scripts": {"test": "node --test", "lint": "true"}})
    )
    (work / "Makefile").write_text("check:\n\ttrue\n")
    git(work, "add", ".")
    git(work, "commit", "-q", "-m", "one")
    for tag in ("v1.2.0", "v1.10.0", "v1.9.0", "nightly"):
        git(work, "tag", tag)
    bare = tmp_path / "lib.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    return bare


@pytest.fixture
def checkout(tmp_path: Path, upstream: Path) -> Path:
    fork = tmp_path / "My Fork"
    git(tmp_path, "clone", "-q", str(upstream), str(fork))
    return fork


def init(root: Path, *args: str) -> int:
    return main(["--workspace-root", str(root), "init", *args])


def test_init_in_a_fork_checkout_writes_a_workspace_toml(
    checkout: Path, upstream: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init(checkout, "--upstream", str(upstream), "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["next"] == [
        "workspace doctor",
        "workspace flow run fork-maintenance --fork my-fork --tag v1.10.0",
        "workspace watch --once",
    ]
    assert document["gitignore"] == "added"
    assert ".workspace/\n" in (checkout / ".gitignore").read_text()
    assert git(checkout, "remote", "get-url", "upstream") == str(upstream)
    loaded = configfile.load(checkout)
    [fork] = loaded.forks
    assert (fork.name, fork.path, fork.branch, fork.push) == ("my-fork", ".", "main", False)
    assert fork.verify_commands == ["npm test", "npm run lint", "make check"]
    assert fork.push_remotes == ["origin"] and fork.upstream_url == str(upstream)
    [source] = loaded.sources
    assert (source.fork, source.kind, source.prime_only) == ("my-fork", "git-tags", True)
    assert "# " in (checkout / "workspace.toml").read_text()  # commented


def test_init_with_fork_path_finds_the_upstream_by_name(
    tmp_path: Path, checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    git(checkout, "remote", "rename", "origin", "upstream")
    root = tmp_path / "ws"
    root.mkdir()
    assert init(root, "--fork", str(checkout)) == 0
    out = capsys.readouterr().out
    assert "newest tag v1.10.0" in out and "workspace watch --once" in out
    [fork] = configfile.load(root).forks
    assert fork.path == str(checkout) and fork.push_remotes == []


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not-git", "is not a git repository"),
        ("no-upstream", "has no remote named upstream (remotes: origin); pass --upstream URL"),
        ("no-tags", "no release tag (like v1.2.3) on upstream"),
        ("exists", "workspace.toml already exists; pass --force to replace it"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, checkout: Path, case: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args: list[str] = []
    root = checkout
    if case == "not-git":
        root = tmp_path / "plain"
        root.mkdir()
    elif case == "no-tags":
        empty = tmp_path / "empty"
        empty.mkdir()
        git(empty, "init", "-q", "--bare")
        args = ["--upstream", str(empty)]
    elif case == "exists":
        (checkout / "workspace.toml").write_text("[workspace]\n")
    assert init(root, *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    if case == "no-tags":
        assert "upstream" not in git(checkout, "remote")  # left as it was
    if case == "exists":
        assert (checkout / "workspace.toml").read_text() == "[workspace]\n"


def test_init_harness_builds_the_tutorial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init(tmp_path, "--harness", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["harness"] == str(tmp_path / "harness")
    assert (tmp_path / "harness" / "fork" / ".git").exists()
