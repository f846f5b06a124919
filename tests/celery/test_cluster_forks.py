"""Fork maintenance on workers: the tutorial's harness flow through the Celery executor, and
one maintenance run per fork across the cluster (a Redis lock keyed by the fork's repository
name), each worker's checkout refreshed from the fork's remote before its run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, Worker
from support.backend import WORKSPACE
from support.waiting import until
from support.wire import Rpc, open_rpc

from workspace_adapter.harness import cut_release

REPO_ROOT = Path(__file__).resolve().parents[2]
REMOTES = ("upstream", "origin", "jojo")

# The harness fork, pushed to its (shared) origin and refreshed from it; the flow package's
# step may run twice at once so that two releases reach two workers together.
FORK_TOML = """
[workspace]
name = "cluster"

[[workspace.forks]]
name = "harness"
path = "harness/fork"
branch = "main"
upstream_remote = "upstream"
upstream_url = "{upstream}"
expected_repo = "peezy-tech/patch-moi-harness"
release_tags = "re:v\\\\d+\\\\.\\\\d+\\\\.\\\\d+"
push_remotes = ["origin"]
canonical_remote = "origin"
push = true
verify_commands = ["npm test"]

[[workspace.tasks]]
id = "harness-flow"
kind = "flow"
flow = "upstream.release"
[workspace.tasks.event]
source = "cluster"
[workspace.tasks.event.payload]
repo = "peezy-tech/patch-moi-harness"
tag = "v0.1.3"
"""


def git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def is_ancestor(repo: Path, commit: str, head: str) -> bool:
    done = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, head])
    return done.returncode == 0


def harness_workspace(template: Path, root: Path, shared: Path | None) -> Path:
    """A workspace with the harness and this project's flows; with ``shared``, the fork's
    remotes are that workspace's bare repositories (one origin for the whole cluster)."""
    shutil.copytree(template / "harness", root / "harness", symlinks=True)
    shutil.copytree(REPO_ROOT / "flows", root / "flows", symlinks=True)
    override = root / ".codex" / "flows" / "patch-moi-harness"
    shutil.copytree(REPO_ROOT / "flows" / "patch-moi-harness", override)
    manifest = override / "flow.toml"
    manifest.write_text(manifest.read_text().replace("concurrency = 1", "concurrency = 2"))
    remotes = (shared or root) / "harness" / "remotes"
    (root / "workspace.toml").write_text(FORK_TOML.format(upstream=remotes / "upstream.git"))
    if shared is not None:
        for name in REMOTES:
            git(root / "harness" / "fork", "remote", "set-url", name, str(remotes / f"{name}.git"))
    return root


async def ended(rpc: Rpc, run_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        run: dict[str, Any] = (await rpc.call("flow.getRun", {"runId": run_id}))["run"]
        return run if run["status"] not in ("queued", "running") else None

    return await until(check, f"run {run_id} to end", within=60)


class HarnessCluster:
    """A cluster whose workspaces hold the harness; workers share the backend's remotes."""

    def __init__(self, cluster: Cluster, template: Path) -> None:
        self.cluster = cluster
        self.template = template
        cluster.backend_root = harness_workspace(template, cluster.base / "backend-hws", None)

    @property
    def root(self) -> Path:
        return self.cluster.backend_root

    def worker(self, name: str, concurrency: int = 1) -> Worker:
        root = harness_workspace(self.template, self.cluster.base / f"{name}-hws", self.root)
        return self.cluster.worker(name, concurrency, root=root)


@pytest.fixture
def harness(cluster: Cluster, harness_template: Path) -> HarnessCluster:
    return HarnessCluster(cluster, harness_template)


def test_the_tutorials_harness_flow_completes_through_a_worker(harness: HarnessCluster) -> None:
    """Acceptance 6: ``workspace run harness-flow`` against a backend with the Celery executor
    completes (the fork already holds v0.1.3)."""
    worker = harness.worker("w1")
    backend = harness.cluster.backend()
    done = subprocess.run(
        [
            str(WORKSPACE),
            "--workspace-root",
            str(harness.root),
            "--backend-url",
            backend.url,
            "run",
            "harness-flow",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CODEX_FLOW_PUSH": "0"},
    )
    assert done.returncode == 0, (done.stdout, done.stderr, worker.stderr())
    assert json.loads(done.stdout)["status"] == "completed", done.stdout


async def test_two_releases_of_one_fork_on_two_workers_run_one_after_the_other(
    harness: HarnessCluster,
) -> None:
    """Acceptance 5: two release events for the same fork dispatched together reach two
    workers; one runs while the other waits for the fork's cluster-wide lock, then refreshes
    its checkout from the fork's remote and rebases on what the first pushed. The fork ends
    consistent: its remote holds both releases, each worker's checkout is that branch, clean."""
    first, second = harness.worker("w1"), harness.worker("w2")
    backend = harness.cluster.backend()
    tags = [cut_release(harness.root), cut_release(harness.root)]
    rpc = await open_rpc(backend.url)
    await rpc.call("flow.subscribe", {})
    run_ids = []
    for tag in tags:
        payload = {"repo": "peezy-tech/patch-moi-harness", "tag": tag}
        release = {"id": f"release-{tag}", "type": "upstream.release", "payload": payload}
        reply = await rpc.call("flow.dispatch", release)
        run_ids.extend(reply["runIds"])
    assert len(run_ids) == 2
    runs = [await ended(rpc, run_id) for run_id in run_ids]
    statuses = sorted(r["resultStatus"] for r in runs)
    # Whichever release ran second finds the other already in the branch or rebases onto it.
    assert statuses in (["changed", "changed"], ["changed", "completed"]), runs
    workers = {r["result"]["artifacts"]["worker"] for r in runs}
    assert workers == {"w1", "w2"}, "each release ran on its own worker"
    waited = [n for n in rpc.notes if "is busy" in n["params"].get("line", "")]
    assert len(waited) == 1, "the second run waited for the fork's lock"
    remotes = harness.root / "harness" / "remotes"
    head = git(remotes / "origin.git", "rev-parse", "refs/heads/main")
    newest = git(remotes / "upstream.git", "rev-parse", f"refs/tags/{tags[1]}^{{commit}}")
    assert is_ancestor(remotes / "origin.git", newest, head), "the remote holds the newest release"
    for worker in (first, second):
        fork = worker.root / "harness" / "fork"
        assert git(fork, "status", "--porcelain") == ""
        assert git(fork, "symbolic-ref", "--short", "HEAD") == "main"
    last = max(runs, key=lambda r: r["completedAt"])
    assert last["result"]["artifacts"]["afterSha"] == head, "the last run pushed what it built"
