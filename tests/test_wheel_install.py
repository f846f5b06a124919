"""The wheel, installed: what a user gets from ``pip install`` maintains their own fork.

The wheel is built from a copy of this checkout's sources (setuptools writes ``build/`` next to
the project, and a stale ``build/lib`` can carry files the tree no longer has), installed into a
fresh virtualenv outside the checkout, and every command below runs from a folder outside the
checkout with only that virtualenv on PATH: no PYTHONPATH, no editable install to fall back on.
The journey is the getting-started one: an upstream with release tags, a fork with a commit of
its own, ``workspace init --fork ./fork --upstream …`` from the folder above, a release
(``changed``), a conflicting release (``needs_intervention``, the fork as found), and a release
the watcher sees and the backend maintains. Building and installing take ~10 s, once per module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
# Building pulls setuptools into an isolated build env, installing pulls the dependencies (pip's
# cache usually has them after scripts/bootstrap); the default 120 s would be tight on CI.
pytestmark = pytest.mark.timeout(300)

PACKAGE_DATA = (
    "workspace_adapter/py.typed",
    "workspace_adapter/flows/bun_module_runner.mjs",
    "workspace_adapter/flows/builtin/fork-maintenance/flow.toml",
    "workspace_adapter/flows/builtin/fork-maintenance/step.py",
)
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Upstream Person",
    "GIT_AUTHOR_EMAIL": "upstream@example.invalid",
    "GIT_COMMITTER_NAME": "Upstream Person",
    "GIT_COMMITTER_EMAIL": "upstream@example.invalid",
}


class Installed:
    """The built wheel and a virtualenv outside the checkout that has it installed."""

    def __init__(self, wheel: Path, venv: Path, home: Path) -> None:
        self.wheel = wheel
        self.venv = venv
        self.bin = venv / "bin"
        self.home = home

    def env(self) -> dict[str, str]:
        """Only the virtualenv and the system tools on PATH; nothing pointing at the checkout."""
        tools = [str(Path(found).parent) for t in ("git", "sh") if (found := shutil.which(t))]
        path = [str(self.bin), *dict.fromkeys([*tools, "/usr/local/bin", "/usr/bin", "/bin"])]
        dropped = ("PYTHON", "VIRTUAL_ENV", "GIT_", "CODEX_", "NO_COLOR")
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        # A home of its own: no git identity or config of the machine's, as on a fresh one.
        return {**env, "PATH": os.pathsep.join(path), "HOME": str(self.home)}


def _sources(into: Path) -> Path:
    """The files a clean clone would build from (tracked, or new and not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if name.startswith(("src/", "pyproject.toml", "README")) and source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel-install")
    assert not base.is_relative_to(REPO_ROOT)
    source = _sources(base / "source")
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        cwd=base,
        check=True,
    )
    (wheel,) = dist.glob("workspace_adapter-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], cwd=base, check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        cwd=base,
        check=True,
    )
    home = base / "home"
    home.mkdir()
    return Installed(wheel, venv, home)


def test_the_wheel_carries_the_builtin_flow_and_the_bun_runner(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
    assert set(PACKAGE_DATA) <= names, sorted(set(PACKAGE_DATA) - names)


def test_the_installed_cli_maintains_a_fork(installed: Installed, tmp_path: Path) -> None:
    env = installed.env()
    here = tmp_path / "work"  # the user's folder: the fork, its upstream, the workspace
    here.mkdir()

    def workspace(*args: str, code: int = 0) -> str:
        done = subprocess.run(
            ["workspace", *args], cwd=here, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        return done.stdout

    def git(repo: Path, *args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "init.defaultBranch=main", *args],
            cwd=repo,
            env={**env, **GIT_IDENTITY},
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def commit(repo: Path, name: str, text: str, message: str) -> None:
        (repo / name).write_text(text)
        git(repo, "add", name)
        git(repo, "commit", "-q", "-m", message)

    # It is the venv's workspace that runs, on the venv's package, not this checkout's.
    where = subprocess.run(
        ["python", "-c", "import workspace_adapter; print(workspace_adapter.__file__)"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(installed.venv), where
    assert shutil.which("workspace", path=env["PATH"]) == str(installed.bin / "workspace")

    # The upstream (v1.0.0), "your" fork on a host (origin), and its checkout with a patch.
    upstream = here / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q")
    commit(upstream, "README", "a tiny project\n", "readme")
    commit(upstream, "lib.txt", "one\n", "lib")
    git(upstream, "tag", "v1.0.0")
    git(here, "clone", "-q", "--bare", str(upstream), "origin.git")
    git(here, "clone", "-q", "origin.git", "fork")
    fork = here / "fork"
    commit(fork, "patch.txt", "our patch\n", "fork: our patch")
    git(fork, "push", "-q", "origin", "main")

    # init from the folder above the fork, as the getting-started guide does.
    out = workspace("init", "--fork", "./fork", "--upstream", str(upstream))
    assert f"wrote {here / 'workspace.toml'}" in out
    assert "fork      fork: fork on main" in out
    assert f"upstream  upstream = {upstream}" in out
    assert "release   newest tag v1.0.0" in out
    assert "push      off" in out
    assert "commit workspace.toml" not in out  # the workspace is outside the fork
    assert "workspace flow run fork-maintenance --fork fork --tag v1.0.0" in out
    written = tomllib.loads((here / "workspace.toml").read_text())
    (entry,) = written["workspace"]["forks"]
    assert entry["name"] == "fork"
    assert entry["path"] == "fork"
    assert entry["branch"] == "main"
    assert entry["upstream_url"] == str(upstream)
    assert entry["push"] is False
    assert entry["push_remotes"] == ["origin"]
    (source,) = written["workspace"]["sources"]
    assert source["kind"] == "git-tags"
    assert source["fork"] == "fork"
    assert source["prime_only"] is True
    assert git(fork, "status", "--porcelain") == ""
    assert git(fork, "remote", "get-url", "upstream") == str(upstream)
    # The tiny project has no checks init could find; the user names one.
    config = (here / "workspace.toml").read_text()
    assert "verify_commands = []" in config
    (here / "workspace.toml").write_text(
        config.replace("verify_commands = []", 'verify_commands = ["test -f README"]')
    )

    # A release: the fork is rebased onto it, checks pass, candidate refs reported, not pushed.
    commit(upstream, "lib.txt", "one\ntwo\n", "v1.1.0")
    git(upstream, "tag", "v1.1.0")
    result = json.loads(
        workspace("flow", "run", "fork-maintenance", "--fork", "fork", "--tag", "v1.1.0", "--json")
    )
    assert result["status"] == "changed", result["message"]
    head = git(fork, "rev-parse", "HEAD")
    artifacts = result["artifacts"]
    assert artifacts["releaseTag"] == "v1.1.0"
    assert artifacts["afterSha"] == head
    assert [c["status"] for c in artifacts["checks"]] == ["passed"]
    (ref,) = artifacts["candidateRefs"]
    assert (ref["ref"], ref["sha"], ref["pushed"]) == ("refs/heads/main", head, False)
    assert git(fork, "log", "-1", "--format=%s") == "fork: our patch"
    assert git(fork, "merge-base", "--is-ancestor", "v1.1.0", "HEAD") == ""

    # A release touching the patch's file, off to the side of upstream's main: a person is needed,
    # and the fork is left exactly as found.
    git(upstream, "checkout", "-q", "-b", "conflicting", "v1.1.0")
    commit(upstream, "patch.txt", "their version\n", "v1.2.0")
    git(upstream, "tag", "v1.2.0")
    git(upstream, "checkout", "-q", "main")
    result = json.loads(
        workspace(
            "flow", "run", "fork-maintenance", "--fork", "fork", "--tag", "v1.2.0", "--json", code=3
        )
    )
    assert result["status"] == "needs_intervention", result["message"]
    assert "patch.txt" in result["message"]
    assert git(fork, "rev-parse", "HEAD") == head
    assert git(fork, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(fork, "status", "--porcelain", "--untracked-files=all") == ""
    assert not (fork / ".git" / "rebase-merge").exists()

    # The service path: a backend of the venv, the watcher primes, then sees a new release.
    with _backend(here, env) as url:
        watched = json.loads(workspace("--backend-url", url, "watch", "--once", "--json"))
        assert watched["attempts"] == []
        commit(upstream, "lib.txt", "one\ntwo\nthree\n", "v1.3.0")
        git(upstream, "tag", "v1.3.0")
        workspace("--backend-url", url, "watch", "--once")

        def finished() -> dict[str, Any] | None:
            (attempt,) = json.loads(workspace("attempts", "--json"))["attempts"]
            done = attempt["status"] not in ("undelivered", "started")
            return attempt if done else None

        attempt = wait_until(finished, "the v1.3.0 attempt to end")
    assert attempt["upstreamTag"] == "v1.3.0"
    assert attempt["status"] == "changed", attempt["message"]
    head = git(fork, "rev-parse", "HEAD")
    assert [r["sha"] for r in attempt["candidateRefs"]] == [head]
    assert git(fork, "merge-base", "--is-ancestor", "v1.3.0", "HEAD") == ""
    assert git(fork, "status", "--porcelain") == ""


@contextmanager
def _backend(root: Path, env: dict[str, str]) -> Iterator[str]:
    """``workspace backend --port 0`` of the venv in ``root``; yields its URL, SIGTERM after."""
    log = root / "backend-stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            ["workspace", "backend", "--port", "0"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("workspace backend listening on "), (line, log.read_text())
        yield line.split()[-1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
