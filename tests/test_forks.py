"""Forks are configuration: two forks in one workspace.toml, served by the built-in flow.

Real git repositories in a temp folder: two upstreams with release tags, two forks with a
commit of their own on top of the older tag. Each event runs on its fork only; an event for no
configured fork is skipped; a fork name (or repo) two entries share is a config error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.git import git

from workspace_adapter.cli import main
from workspace_adapter.flows.package import discover_flows, matching_steps
from workspace_adapter.local import config, configfile

WORKSPACE = (sys.executable, "-m", "workspace_adapter")


def commit(repo: Path, name: str, text: str, message: str) -> None:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)


def make_upstream(base: Path, name: str) -> Path:
    """A bare upstream with tags v1.0.0 and v1.1.0 (and a v1.1.0-rc1 that is no release)."""
    work = base / f"{name}-work"
    work.mkdir()
    git(work, "init", "-q")
    commit(work, "lib.txt", "one\n", "v1.0.0")
    git(work, "tag", "v1.0.0")
    commit(work, "lib.txt", "one\ntwo\n", "v1.1.0")
    git(work, "tag", "v1.1.0-rc1")
    git(work, "tag", "v1.1.0")
    bare = base / f"{name}.git"
    git(base, "clone", "-q", "--bare", str(work), str(bare))
    return bare


def make_fork(base: Path, upstream: Path, name: str) -> Path:
    """A clone of ``upstream`` at v1.0.0 with one commit of its own on ``main``."""
    fork = base / "forks" / name
    git(base, "clone", "-q", str(upstream), str(fork))
    git(fork, "checkout", "-q", "-B", "main", "v1.0.0")
    git(fork, "remote", "rename", "origin", "upstream")
    commit(fork, f"{name}.txt", f"{name}'s patch\n", f"{name}: our patch")
    return fork


TWO_FORKS = """
    [workspace]
    name = "two"

    [[workspace.forks]]
    name = "alpha"
    path = "forks/alpha"
    upstream_url = "alpha-up.git"
    repo = "acme/alpha"
    release_tags = "v*.*.*"
    verify_commands = ["test -f lib.txt", "test -f alpha.txt"]

    [[workspace.forks]]
    name = "beta"
    path = "forks/beta"
    upstream_url = "beta-up.git"
    expected_repo = "acme/beta"
    release_tags = 're:v\\d+\\.\\d+\\.\\d+'
    verify_commands = ["test -f beta.txt"]

    [[workspace.sources]]
    id = "beta-releases"
    kind = "git-tags"
    fork = "beta"
"""


@pytest.fixture
def two_forks(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    for name in ("alpha", "beta"):
        make_fork(root, make_upstream(root, f"{name}-up"), name)
    (root / "workspace.toml").write_text(textwrap.dedent(TWO_FORKS))
    return root


def event_file(root: Path, name: str, payload: dict[str, Any]) -> Path:
    path = root / f"{name}.json"
    event = {"id": f"test:{name}", "type": "upstream.release", "source": "t", "payload": payload}
    path.write_text(json.dumps(event))
    return path


def flow_run(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    env = {**os.environ, "CODEX_FLOW_FETCH": "1", "CODEX_FLOW_PUSH": "0"}
    done = subprocess.run(
        [
            *WORKSPACE,
            "--workspace-root",
            str(root),
            "flow",
            "run",
            "fork-maintenance",
            "--json",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD")


def test_the_config_holds_both_forks_and_the_source_takes_its_forks_settings(
    two_forks: Path,
) -> None:
    loaded = configfile.load(two_forks)
    assert [f.name for f in loaded.forks] == ["alpha", "beta"]
    assert loaded.fork("beta").repo == "acme/beta"  # expected_repo is the same setting
    source = loaded.sources[0]
    assert (source.fork, source.url, source.repo) == ("beta", "beta-up.git", "acme/beta")
    assert source.payload == {"fork": "beta"}
    assert source.tag_pattern == r"v\d+\.\d+\.\d+"
    # The validated-config cache keeps the forks too.
    cached = configfile.load_cached(two_forks)
    assert configfile.load_cached(two_forks) == cached
    assert cached.forks == loaded.forks


def test_each_event_runs_only_on_its_fork(two_forks: Path) -> None:
    alpha, beta = two_forks / "forks/alpha", two_forks / "forks/beta"
    beta_before = head(beta)
    code, result = flow_run(
        two_forks,
        "--event",
        str(event_file(two_forks, "a", {"repo": "acme/alpha", "tag": "v1.1.0"})),
    )
    assert (code, result["status"]) == (0, "changed"), result
    assert result["artifacts"]["forkRepo"] == "forks/alpha"
    assert [c["name"] for c in result["artifacts"]["checks"]] == [
        "test -f lib.txt",
        "test -f alpha.txt",
    ]
    assert git(alpha, "merge-base", "--is-ancestor", "v1.1.0", "HEAD") == ""
    assert head(beta) == beta_before  # the other fork was not touched

    alpha_after = head(alpha)
    code, result = flow_run(two_forks, "--fork", "beta", "--tag", "v1.1.0")
    assert (code, result["status"]) == (0, "changed"), result
    assert result["artifacts"]["forkRepo"] == "forks/beta"
    assert head(beta) != beta_before and head(alpha) == alpha_after


def test_an_event_for_no_configured_fork_is_skipped(two_forks: Path) -> None:
    before = {name: head(two_forks / "forks" / name) for name in ("alpha", "beta")}
    for payload in ({"repo": "acme/gamma", "tag": "v1.1.0"}, {"fork": "gamma", "tag": "v1.1.0"}):
        code, result = flow_run(two_forks, "--event", str(event_file(two_forks, "g", payload)))
        assert (code, result["status"]) == (0, "skipped")
        assert "names no fork" in result["message"] and "alpha, beta" in result["message"]
    assert before == {name: head(two_forks / "forks" / name) for name in ("alpha", "beta")}


def test_a_tag_outside_release_tags_is_skipped(two_forks: Path) -> None:
    code, result = flow_run(two_forks, "--fork", "beta", "--tag", "v1.1.0-rc1")
    assert (code, result["status"]) == (0, "skipped")
    assert "is not a release tag of fork beta" in result["message"]


def test_unknown_fork_on_the_command_line_is_bad_input(
    two_forks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--workspace-root",
            str(two_forks),
            "flow",
            "run",
            "fork-maintenance",
            "--fork",
            "x",
            "--tag",
            "v1",
        ]
    )
    assert code == 2
    assert "no fork 'x'; configured forks: alpha, beta" in capsys.readouterr().err


def test_one_event_never_starts_two_runs_on_one_fork(two_forks: Path) -> None:
    # A workspace package that names alpha serves alpha's events; the built-in steps aside.
    own = two_forks / "flows" / "alpha-own"
    own.mkdir(parents=True)
    (own / "step.py").write_text("")
    (own / "flow.toml").write_text(
        textwrap.dedent(
            """
            name = "alpha-own"
            [config]
            fork_repo = "forks/alpha"
            [[steps]]
            name = "maintain"
            runner = "python"
            script = "step.py"
            [steps.trigger]
            type = "upstream.release"
            """
        )
    )
    discovery = discover_flows(two_forks)
    assert discovery.errors == []
    packages = {p.name: p for p in discovery.packages}
    assert list(packages) == ["alpha-own", "fork-maintenance"]
    # The fork entry reaches the package's step through its config.
    assert packages["alpha-own"].config["fork"] == "alpha"
    assert [f["name"] for f in packages["alpha-own"].config["forks"]] == ["alpha"]
    assert [f["name"] for f in packages["fork-maintenance"].config["forks"]] == ["alpha", "beta"]

    def runs(payload: dict[str, Any]) -> list[str]:
        event = {"id": "e", "type": "upstream.release", "payload": payload}
        return [p.name for p, _ in matching_steps(discovery.packages, event)]

    assert runs({"repo": "acme/alpha", "tag": "v1.1.0"}) == ["alpha-own"]
    assert runs({"fork": "alpha", "tag": "v1.1.0"}) == ["alpha-own"]
    assert runs({"repo": "acme/beta", "tag": "v1.1.0"}) == ["fork-maintenance"]
    assert runs({"fork": "beta", "repo": "acme/beta", "tag": "v1.1.0"}) == ["fork-maintenance"]
    assert runs({"fork": "beta", "repo": "acme/alpha", "tag": "v1"}) == ["fork-maintenance"]
    assert runs({"repo": "acme/gamma", "tag": "v1.1.0"}) == []
    assert runs({"fork": "gamma", "repo": "acme/beta", "tag": "v1.1.0"}) == []


def test_a_workspace_package_of_the_same_name_wins(two_forks: Path) -> None:
    own = two_forks / ".codex" / "flows" / "fork-maintenance"
    own.mkdir(parents=True)
    (own / "flow.toml").write_text(
        'name = "fork-maintenance"\n[[steps]]\nname = "x"\nrunner = "command"\ncommand = ["true"]\n'
    )
    [package] = discover_flows(two_forks).packages
    assert package.root == own.resolve()


def test_no_forks_no_builtin_flow(tmp_path: Path) -> None:
    (tmp_path / "workspace.toml").write_text('[workspace]\nname = "t"\n')
    assert discover_flows(tmp_path).packages == []


@pytest.mark.parametrize(
    ("second", "line", "problem"),
    [
        (
            'name = "alpha"\npath = "b"\n',
            9,
            "workspace.forks[1].name: fork name 'alpha' is already used by workspace.forks[0]",
        ),
        (
            'name = "beta"\npath = "b"\nexpected_repo = "acme/alpha"\n',
            11,
            "workspace.forks[1].expected_repo: repo 'acme/alpha' is already used by "
            "workspace.forks[0]",
        ),
    ],
)
def test_a_name_two_forks_share_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], second: str, line: int, problem: str
) -> None:
    text = (
        '[workspace]\nname = "t"\n\n[[workspace.forks]]\nname = "alpha"\npath = "a"\n'
        'repo = "acme/alpha"\n[[workspace.forks]]\n' + second
    )
    (tmp_path / "workspace.toml").write_text(text)
    code = main(
        [
            "--workspace-root",
            str(tmp_path),
            "flow",
            "run",
            "fork-maintenance",
            "--fork",
            "alpha",
            "--tag",
            "v1",
        ]
    )
    assert code == 2
    assert f"workspace.toml:{line}: {problem}" in capsys.readouterr().err
    with pytest.raises(config.ConfigError):
        configfile.load(tmp_path)
