"""``workspace watch`` end to end: real harness repos, a real backend, real SQLite records."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_helpers import (
    GIT_SOURCE,
    NO_PUSH,
    REPO,
    globals_for,
    records,
    watch_once,
    write_workspace,
)
from support.backend import Backend, dead_url, running_backend

from workspace_adapter.commands import attempts
from workspace_adapter.harness import cut_release

EVENT_V014 = "patch:upstream:v0.1.4:upstream.release"
NOTIFY = """
[workspace.notify]
command = ["sh", "-c", "cat >> notified.jsonl; echo >> notified.jsonl"]
"""


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)


@pytest.fixture
def root(workspace_root: Path) -> Path:
    write_workspace(workspace_root, GIT_SOURCE + NOTIFY)
    return workspace_root


@pytest.fixture
def backend(root: Path, tmp_path: Path) -> Iterator[Backend]:
    with running_backend(root, tmp_path / "backend", env=NO_PUSH) as daemon:
        yield daemon


def fork_head(root: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "refs/heads/main"],
        cwd=root / "harness" / "fork",
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def notified(root: Path) -> list[dict[str, Any]]:
    path = root / "notified.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_release_is_primed_dispatched_rebased_and_not_dispatched_again(
    root: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    assert watch_once(root, backend.url) == 0
    assert "upstream: primed with 4 release(s) (v0.1.0 … v0.1.3)" in capsys.readouterr().out
    assert records(root).attempts() == []

    assert cut_release(root) == "v0.1.4"
    assert watch_once(root, backend.url) == 0
    out = capsys.readouterr().out
    assert "new release v0.1.4 → attempt att_" in out
    [attempt] = records(root).attempts()
    assert (attempt.event_id, attempt.operation, attempt.status) == (
        EVENT_V014,
        "dispatch",
        "changed",
    )
    assert (attempt.upstream_repo, attempt.upstream_tag) == (REPO, "v0.1.4")
    assert "rebased 3 fork commits" in (attempt.message or "")
    [run_id] = attempt.run_ids
    assert attempt.run_statuses == {run_id: "changed"}
    [ref] = attempt.candidate_refs
    assert ref["ref"] == "refs/heads/main" and ref["sha"] == fork_head(root)
    assert ref["pushed"] is False  # CODEX_FLOW_PUSH=0
    stored = backend.call("flow.getEvent", {"eventId": EVENT_V014})
    assert isinstance(stored, dict)
    event = stored["event"]
    assert event["type"] == "upstream.release"
    assert event["source"] == "svc"
    assert event["payload"]["tag"] == "v0.1.4" and event["payload"]["repo"] == REPO
    assert event["payload"]["provider"] == "git"
    assert event["payload"]["url"] == str(root / "harness" / "remotes" / "upstream.git")
    assert set(event["payload"]) >= {"provider", "repo", "tag", "url", "publishedAt"}

    assert watch_once(root, backend.url) == 0
    assert "upstream: no new release" in capsys.readouterr().out
    assert len(records(root).attempts()) == 1
    listed = backend.call("flow.listEvents", {"type": "upstream.release"})
    assert isinstance(listed, dict) and len(listed["events"]) == 1
    assert notified(root) == []

    # A watcher that died while following leaves the attempt "started"; the next one follows
    # its runs again (they ended meanwhile) instead of dispatching anew.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    with records(root).connect() as db:
        db.execute(
            "UPDATE attempts SET status = 'started', claimed_pid = ?, message = NULL",
            (int(gone.stdout),),
        )
    assert watch_once(root, backend.url) == 0
    assert "following its runs again" in capsys.readouterr().out
    [again] = records(root).attempts()
    assert (again.status, again.run_ids) == ("changed", attempt.run_ids)
    assert len(records(root).dispatches(again.id)) == 1


def test_a_conflicting_release_needs_intervention_and_notifies_once(
    root: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    assert watch_once(root, backend.url) == 0
    before = fork_head(root)
    cut_release(root, conflict=True)
    assert watch_once(root, backend.url) == 3
    [attempt] = records(root).attempts()
    assert attempt.status == "needs_intervention"
    assert "conflicts in index.js" in (attempt.message or "")
    assert "the rebase was aborted" in (attempt.message or "")
    assert fork_head(root) == before
    [note] = notified(root)
    assert note["id"] == attempt.id
    assert note["status"] == "needs_intervention"
    assert note["upstreamTag"] == "v0.1.4"
    assert note["message"] == attempt.message

    assert watch_once(root, backend.url) == 0
    assert len(notified(root)) == 1
    capsys.readouterr()
    assert attempts.list_attempts(globals_for(root, backend.url), "needs_intervention", True) == 0
    [listed] = json.loads(capsys.readouterr().out)["attempts"]
    assert listed["id"] == attempt.id


def test_an_undelivered_attempt_is_redelivered_then_retried(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    down = dead_url()
    assert watch_once(root, down) == 0  # priming needs no backend
    cut_release(root)
    assert watch_once(root, down) == 4
    [attempt] = records(root).attempts()
    assert (attempt.status, attempt.message) == ("undelivered", "backend not reachable")
    assert attempt.next_delivery_at is not None
    # The cursor moved on: the release is seen and will not make a second attempt.
    cursor = records(root).cursor("upstream")
    assert cursor is not None and cursor.failures == 0
    assert "undelivered (backend not reachable)" in capsys.readouterr().out

    with running_backend(root, tmp_path / "backend", env=NO_PUSH) as backend:
        assert watch_once(root, backend.url) == 0
        [delivered] = records(root).attempts()
        assert delivered.id == attempt.id
        assert (delivered.status, delivered.message) == ("changed", delivered.message)
        assert delivered.status == "changed" and delivered.candidate_refs
        assert "redelivering" in capsys.readouterr().out

        g = globals_for(root, backend.url)
        assert attempts.retry(g, attempt.id, as_json=True) == 0
        retried = json.loads(capsys.readouterr().out)
        assert retried["operation"] == "retry" and retried["retryOf"] == attempt.id
        assert retried["eventId"] == EVENT_V014
        assert retried["status"] == "completed"  # the fork already contains v0.1.4
        [run_id] = retried["runIds"]
        assert run_id.endswith("_replay")
        dispatch_log = records(root).dispatches(retried["id"])
        assert [d["method"] for d in dispatch_log] == ["flow.replay"]

    # A backend that never saw the event (a fresh store): replay is refused for good (a failed
    # attempt, the notify command runs), retry dispatches the stored event.
    with running_backend(root, tmp_path / "fresh-backend", env=NO_PUSH) as fresh:
        g = globals_for(root, fresh.url)
        assert attempts.replay(g, attempt.id, as_json=True) == 1
        refused = json.loads(capsys.readouterr().out)
        assert refused["status"] == "failed" and refused["runIds"] == []
        assert f"the backend does not know event {EVENT_V014}" in refused["message"]
        assert f"`workspace attempts retry {attempt.id}`" in refused["message"]
        assert [(n["id"], n["status"]) for n in notified(root)] == [(refused["id"], "failed")]
        assert attempts.retry(g, attempt.id, as_json=True) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["status"] == "completed"
        assert not again["runIds"][0].endswith("_replay")
        assert [d["method"] for d in records(root).dispatches(again["id"])] == ["flow.dispatch"]
        # replay needs the backend to know the event; this one does now.
        assert attempts.replay(g, again["id"], as_json=True) == 0
        replayed = json.loads(capsys.readouterr().out)
        assert replayed["operation"] == "replay" and replayed["runIds"][0].endswith("_replay")
    assert [a.operation for a in records(root).attempts()] == [
        "replay",
        "retry",
        "replay",
        "retry",
        "dispatch",
    ]


def test_prime_only_false_emits_existing_releases_oldest_first(
    workspace_root: Path, tmp_path: Path
) -> None:
    source = GIT_SOURCE.replace(
        'tag_pattern = "v\\\\d+\\\\.\\\\d+\\\\.\\\\d+"', 'tag_pattern = "v0\\\\.1\\\\.[23]"'
    )
    write_workspace(workspace_root, source + "prime_only = false\n")
    with running_backend(workspace_root, tmp_path / "backend", env=NO_PUSH) as backend:
        assert watch_once(workspace_root, backend.url) == 0
        listed = backend.call("flow.listEvents", {"type": "upstream.release"})
    made = list(reversed(records(workspace_root).attempts()))
    assert [a.upstream_tag for a in made] == ["v0.1.2", "v0.1.3"]
    assert [a.status for a in made] == ["completed", "completed"]
    first, second = (records(workspace_root).dispatches(a.id)[0]["at"] for a in made)
    assert first < second
    assert isinstance(listed, dict)
    assert {e["id"] for e in listed["events"]} == {
        "patch:upstream:v0.1.2:upstream.release",
        "patch:upstream:v0.1.3:upstream.release",
    }


def test_two_watchers_at_once_make_one_attempt(root: Path, backend: Backend) -> None:
    assert watch_once(root, backend.url) == 0
    cut_release(root)
    argv = [
        sys.executable,
        "-m",
        "workspace_adapter",
        "watch",
        "--once",
        "--workspace-root",
        str(root),
        "--backend-url",
        backend.url,
    ]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    [attempt] = records(root).attempts()
    assert attempt.status == "changed"
    assert len(records(root).dispatches(attempt.id)) == 1
    stored = backend.call("flow.getEvent", {"eventId": EVENT_V014})
    assert isinstance(stored, dict) and len(stored["runs"]) == 1
    said = "".join(out for out, _ in outputs)
    assert said.count("new release v0.1.4") == 1
