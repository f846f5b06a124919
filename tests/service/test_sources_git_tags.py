"""The git-tags source against real repositories in temp folders."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest

from workspace_adapter.local.config import SourceConfig
from workspace_adapter.sources import poll
from workspace_adapter.sources.git_tags import list_tags, parse_ls_remote, resolve_url
from workspace_adapter.sources.release import SourceError

GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Up Stream",
    "GIT_AUTHOR_EMAIL": "up@example.org",
    "GIT_COMMITTER_NAME": "Up Stream",
    "GIT_COMMITTER_EMAIL": "up@example.org",
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare remote with lightweight and annotated tags, pushed from a work clone."""
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    for n, tag in enumerate(["v1.0.0", "v1.0.10", "v1.0.2", "nightly"]):
        (work / "f.txt").write_text(f"{n}\n")
        git(work, "add", "f.txt")
        git(work, "commit", "-q", "-m", f"c{n}")
        if tag == "v1.0.2":
            git(work, "tag", "-a", "-m", "annotated", tag)
        else:
            git(work, "tag", tag)
    bare = tmp_path / "ws" / "remotes" / "up.git"
    bare.parent.mkdir(parents=True)
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    return bare


def source(url: str, pattern: str | None = r"v\d+\.\d+\.\d+") -> SourceConfig:
    return SourceConfig(id="up", kind="git-tags", url=url, repo="o/r", tag_pattern=pattern)


async def test_tags_are_peeled_filtered_and_in_version_order(remote: Path) -> None:
    root = remote.parent.parent
    found = await poll(source("remotes/up.git"), root)
    assert [r.tag for r in found] == ["v1.0.0", "v1.0.2", "v1.0.10"]
    annotated = next(r for r in found if r.tag == "v1.0.2")
    # The peeled commit, not the tag object.
    assert annotated.sha == git(remote, "rev-parse", "v1.0.2^{commit}")
    assert annotated.provider == "git"
    assert annotated.url == str(await anyio.Path(remote).resolve())


async def test_without_a_pattern_non_versions_come_last(remote: Path) -> None:
    found = await poll(source(str(remote), None), remote.parent)
    assert [r.tag for r in found] == ["v1.0.0", "v1.0.2", "v1.0.10", "nightly"]


async def test_git_variables_leaked_from_a_hook_are_ignored(
    remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_DIR", "/nonexistent/.git")
    monkeypatch.setenv("GIT_NAMESPACE", "elsewhere")
    tags = await list_tags(str(remote), remote.parent, 10.0)
    assert set(tags) == {"v1.0.0", "v1.0.10", "v1.0.2", "nightly"}


async def test_a_missing_remote_is_a_source_error_naming_the_url(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        await poll(source("remotes/missing.git"), tmp_path)
    message = str(info.value)
    assert str(tmp_path / "remotes" / "missing.git") in message
    assert "check the source's url" in message


def test_urls_resolve_against_the_root_only_when_they_are_local_and_relative() -> None:
    root = Path("/ws")
    assert resolve_url("harness/remotes/upstream.git", root) == "/ws/harness/remotes/upstream.git"
    assert resolve_url("/abs/up.git", root) == "/abs/up.git"
    assert resolve_url("https://github.com/o/r.git", root) == "https://github.com/o/r.git"
    assert resolve_url("git@github.com:o/r.git", root) == "git@github.com:o/r.git"
    assert resolve_url("file:///srv/up.git", root) == "file:///srv/up.git"


def test_parse_ls_remote_prefers_the_peeled_sha() -> None:
    text = "aaa\trefs/tags/v1\nbbb\trefs/tags/v2\nccc\trefs/tags/v2^{}\nddd\trefs/heads/main\n"
    assert parse_ls_remote(text) == {"v1": "aaa", "v2": "ccc"}
