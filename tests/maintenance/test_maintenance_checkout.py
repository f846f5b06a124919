"""SPEC §7's last rule: the fork is left on the branch it was found on, clean, whatever happens."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workspace_adapter.events import FlowResult
from workspace_adapter.harness import cut_release
from workspace_adapter.maintenance.engine import ForkMaintenance
from workspace_adapter.maintenance.settings import load_config, resolve_settings

Snapshot = Callable[[], dict[str, Any]]
FAST_CHECKS = ["node --test"]
FLOW_TOML = Path(__file__).resolve().parents[2] / "flows" / "patch-moi-harness" / "flow.toml"


def flow_config() -> dict[str, Any]:
    with FLOW_TOML.open("rb") as fh:
        return dict(tomllib.load(fh)["config"])


class Interrupted(BaseException):
    """Stands in for the step's SIGTERM (``Terminated``) or a KeyboardInterrupt."""


def run_with_emit(
    workspace_root: Path, emit: Callable[[str], None], tag: str = "v0.1.4", **config: Any
) -> FlowResult:
    merged = {**flow_config(), "fetch": True, "push": False, **config}
    payload = {"repo": "peezy-tech/patch-moi-harness", "tag": tag}
    settings = resolve_settings(
        load_config(merged), workspace_root=workspace_root, payload=payload, env={}
    )
    event = {"id": f"test:{tag}", "type": "upstream.release", "payload": payload}
    # Verbose: the interruptions are placed by the commands the engine announces.
    return ForkMaintenance(settings, event, emit=emit, verbose=True).run()


def interrupt_once_at(prefix: str, exc: BaseException) -> Callable[[str], None]:
    """An emit that raises ``exc`` the first time the engine announces a line starting so."""
    fired: list[str] = []

    def emit(line: str) -> None:
        if line.startswith(prefix) and not fired:
            fired.append(line)
            raise exc

    return emit


@pytest.mark.parametrize("exc", [RuntimeError("boom"), Interrupted("SIGTERM")])
def test_interrupted_between_rebase_and_checks_keeps_no_unverified_rebase(
    workspace_root: Path,
    fork: Path,
    git: Any,
    fork_state: Snapshot,
    exc: BaseException,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = fork_state()
    cut_release(workspace_root)
    emit = interrupt_once_at("$ git range-diff", exc)
    if isinstance(exc, Exception):
        result = run_with_emit(workspace_root, emit, verify_commands=FAST_CHECKS)
        message = result.message or ""
        assert result.status == "failed" and "unexpected RuntimeError: boom" in message
        # One line for the operator; the traceback is in a log file the message names.
        assert "Traceback" not in capsys.readouterr().err
        log = Path(message.split("; traceback in ", 1)[1].split(";", 1)[0])
        assert log.parent == workspace_root / ".workspace" / "logs"
        assert "Traceback" in log.read_text()
    else:
        with pytest.raises(Interrupted):
            run_with_emit(workspace_root, emit, verify_commands=FAST_CHECKS)
    assert fork_state() == before
    candidate = git(fork, "rev-parse", "refs/workspace/candidates/v0.1.4")
    assert git(fork, "rev-parse", f"{candidate}~3") == git(fork, "rev-parse", "v0.1.4^{commit}")


def test_interrupted_while_switching_back_still_ends_on_the_found_branch(
    workspace_root: Path, fork: Path, git: Any
) -> None:
    git(fork, "switch", "-q", "-c", "topic")
    emit = interrupt_once_at("$ git switch --quiet --no-guess topic", Interrupted("SIGTERM"))
    with pytest.raises(Interrupted):
        run_with_emit(workspace_root, emit, tag="v0.1.3", verify_commands=FAST_CHECKS)
    assert git(fork, "symbolic-ref", "--short", "HEAD") == "topic"
    assert git(fork, "status", "--porcelain") == ""


@pytest.mark.parametrize("release", [False, True], ids=["contained", "rebased"])
def test_checks_that_dirty_the_tree_are_blocked_and_reverted(
    workspace_root: Path, maintain: Any, fork: Path, git: Any, fork_state: Snapshot, release: bool
) -> None:
    git(fork, "switch", "-q", "-c", "topic")
    before = fork_state()
    tag = cut_release(workspace_root) if release else "v0.1.3"
    checks = ["node --test", "echo junk > leftover.txt; echo more >> README.md"]
    result = maintain(tag, fetch=True, verify_commands=checks)
    assert result.status == "blocked", result.message
    message = result.message or ""
    assert "left the tree dirty" in message and "set aside what the run left changed" in message
    assert fork_state() == before
    assert not (fork / "leftover.txt").exists()
    # Nothing is deleted: the leftovers wait in the stash (untracked files in its third parent).
    assert git(fork, "show", "stash@{0}^3:leftover.txt") == "junk"
    assert "more" in git(fork, "show", "stash@{0}:README.md")
    if release:
        assert git(fork, "rev-parse", "refs/workspace/candidates/v0.1.4") != before["main"]


def test_a_failing_check_that_wrote_files_leaves_the_tree_clean(
    maintain: Any, fork: Path, git: Any, fork_state: Snapshot
) -> None:
    before = fork_state()
    result = maintain("v0.1.3", verify_commands=["echo junk > leftover.txt; exit 3"])
    assert result.status == "needs_intervention", result.message
    assert "set aside what the run left changed (1 paths" in (result.message or "")
    assert fork_state() == before
    assert git(fork, "show", "stash@{0}^3:leftover.txt") == "junk"


def test_a_candidate_ref_that_cannot_be_written_is_not_reported_as_kept(
    workspace_root: Path, maintain: Any, fork: Path, git: Any, fork_state: Snapshot
) -> None:
    # A ref named like the candidates folder makes refs/workspace/candidates/<tag> unwritable.
    git(fork, "update-ref", "refs/workspace/candidates", "HEAD")
    before = fork_state()
    cut_release(workspace_root)
    result = maintain("v0.1.4", fetch=True, verify_commands=["exit 5"])
    assert result.status == "needs_intervention", result.message
    message = result.message or ""
    assert "kept only in the reflog as" in message and "cannot write" in message
    assert "kept as" not in message
    assert result.artifacts["candidateRefs"] == []
    assert fork_state() == before
