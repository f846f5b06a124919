"""``workspace doctor``: each problem on its own line, and nothing written (checked)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.backend import dead_url

WORKSPACE_TOML = """
[workspace]
name = "patch.moi"
[[workspace.tasks]]
id = "hello"
kind = "command"
command = ["bash", "-c", "echo hello"]
[[workspace.tasks]]
id = "harness-flow"
kind = "flow"
flow = "upstream.release"
[workspace.tasks.event.payload]
repo = "peezy-tech/patch-moi-harness"
tag = "v0.1.3"
"""


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def workspace(root: Path, *argv: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "workspace_adapter", "--workspace-root", str(root), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def path_without(tmp_path: Path, missing: str) -> str:
    """A PATH folder holding the tools doctor checks, except ``missing``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "bash", "node", "npm"):
        found = shutil.which(tool)
        if tool != missing and found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_doctor_reports_each_problem_on_its_own_line_and_writes_nothing(
    workspace_root: Path, tmp_path: Path
) -> None:
    root = workspace_root
    (root / "workspace.toml").write_text(WORKSPACE_TOML)
    assert workspace(root, "run", "hello").returncode == 0  # so there is a state to read
    subprocess.run(
        ["git", "-C", str(root / "harness" / "fork"), "remote", "remove", "origin"], check=True
    )
    broken = root / "flows" / "broken"
    broken.mkdir()
    (broken / "flow.toml").write_text('name = "broken"\nsurprise = true\n')
    url = dead_url()
    before = snapshot(root)
    result = workspace(root, "--backend-url", url, "doctor", path=path_without(tmp_path, "npm"))
    assert snapshot(root) == before, "doctor wrote to the workspace"
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    fails = [line for line in lines if line.startswith("fail")]
    assert any("fork: harness/fork: remote 'origin' missing" in line for line in fails), lines
    assert any("flows:" in line and "broken" in line and "flow.toml" in line for line in fails)
    assert "fail  tools: npm not found on PATH; install it or fix PATH" in fails
    assert (
        f"fail  backend: backend not reachable at {url}; start it with `workspace backend`" in fails
    )
    assert len(fails) == 4, fails
    assert any(line.startswith("ok    last-run: hello: completed") for line in lines)
    assert any(line.startswith("ok    state: ") and "1 run(s)" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_doctor_json_shape(workspace_root: Path, tmp_path: Path) -> None:
    (workspace_root / "workspace.toml").write_text(WORKSPACE_TOML)
    result = workspace(workspace_root, "--backend-url", dead_url(), "doctor", "--json")
    document = json.loads(result.stdout)
    assert set(document) == {"ok", "exitCode", "checks"}
    assert document["ok"] is False and document["exitCode"] == result.returncode == 1
    for check in document["checks"]:
        assert set(check) == {"check", "status", "message"}
        assert check["status"] in ("ok", "warn", "fail")
    failed = [c for c in document["checks"] if c["status"] == "fail"]
    assert [c["check"] for c in failed] == ["backend"]
    assert not (workspace_root / ".workspace").exists()


def test_doctor_exits_2_when_the_config_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "workspace.toml").write_text("[workspace\n")
    before = snapshot(tmp_path)
    result = workspace(tmp_path, "--backend-url", dead_url(), "doctor")
    assert result.returncode == 2
    assert f"fail  config: {tmp_path / 'workspace.toml'}:1: invalid TOML" in result.stdout
    assert snapshot(tmp_path) == before


def test_each_configured_fork_is_checked_by_its_own_entry(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    fork = tmp_path / "myfork"
    subprocess.run(["git", "init", "-q", str(fork)], check=True, env=env)
    subprocess.run(["git", "-C", str(fork), "remote", "add", "origin", "../x.git"], env=env)
    (tmp_path / "workspace.toml").write_text(
        """
[workspace]
name = "mine"
[[workspace.forks]]
name = "myfork"
path = "myfork"
upstream_url = "../upstream.git"
push_remotes = ["origin", "mirror"]
[[workspace.forks]]
name = "gone"
path = "nowhere"
""",
        encoding="utf-8",
    )
    proc = workspace(tmp_path, "doctor", "--json")
    checks = [(c["status"], c["message"]) for c in json.loads(proc.stdout)["checks"]]
    forks = [c for c in checks if "myfork" in c[1] or "nowhere" in c[1]]
    assert forks == [
        ("ok", "myfork: remote upstream is added from upstream_url"),
        ("ok", "myfork: remote origin"),
        (
            "fail",
            "myfork: remote 'mirror' missing; add it with `git -C myfork remote add mirror <url>`",
        ),
        ("warn", "nowhere not found; fix workspace.forks 'gone'.path"),
    ]
    # The tutorial's harness is not this workspace's business.
    assert not any("harness" in message for _, message in checks)
    assert proc.returncode == 1
