"""What a maintenance run prints: phase lines, a failed tool's tail, no escape codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from workspace_adapter.cli import main
from workspace_adapter.maintenance.progress import Progress, plain, seconds, verbose_from


def test_plain_drops_what_draws_on_a_terminal() -> None:
    assert plain("\x1b[31mred\x1b[0m and \x1b[1;32mgreen\x1b[m") == "red and green"
    assert plain("\x1b]8;;https://example.invalid\x07link\x1b]8;;\x07") == "link"
    assert plain("\x1b]0;title\x1b\\text") == "text"
    assert plain("10%\r50%\r100% done\r   \r") == "100% done"
    assert plain("bell\x07 and backspace\x08 and tab\tkept  ") == "bell and backspace and tab\tkept"


def test_verbose_is_asked_for_by_the_environment() -> None:
    assert verbose_from({"CODEX_FLOW_VERBOSE": "1"})
    assert verbose_from({"CODEX_FLOW_VERBOSE": " True "})
    assert not verbose_from({"CODEX_FLOW_VERBOSE": "0"})
    assert not verbose_from({})


def test_seconds_read_as_durations() -> None:
    assert seconds(0.0421) == "0.04s"
    assert seconds(12.34) == "12.3s"
    assert seconds(125) == "2m05s"


def test_phase_lines_details_and_tails() -> None:
    quiet: list[str] = []
    progress = Progress(quiet.append, verbose=False)
    progress.detail("$ git status --porcelain")
    with progress.phase("fetch") as phase:
        phase.summary = "tags from upstream"
    with pytest.raises(RuntimeError), progress.phase("publish"):
        raise RuntimeError("push refused")
    progress.tail("\n".join(f"line {i}" for i in range(30)) + "\n\x1b[31mlast\x1b[0m\n")
    assert quiet[0].startswith("fetch    tags from upstream (") and quiet[0].endswith("s)")
    assert quiet[1].startswith("publish  stopped (")
    assert quiet[2:] == [*(f"    line {i}" for i in range(11, 30)), "    last"]

    loud: list[str] = []
    progress = Progress(loud.append, verbose=True)
    progress.detail("$ git status --porcelain")
    progress.tail("already shown line by line")
    assert loud == ["$ git status --porcelain"]


def test_flow_run_verbose_flag_shows_every_command(
    workspace_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CODEX_FLOW_VERBOSE", raising=False)
    monkeypatch.setenv("CODEX_FLOW_FETCH", "0")
    root = ["--workspace-root", str(workspace_root)]
    assert main([*root, "flow", "run", "patch-moi-harness"]) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("$ ") for line in quiet)
    assert any(line.startswith("check    npm test: passed (") for line in quiet)

    assert main([*root, "flow", "run", "patch-moi-harness", "-v", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "completed"
    assert "$ git rev-parse --show-toplevel" in captured.err.splitlines()
    assert "CODEX_FLOW_VERBOSE" not in os.environ  # only for the steps of that command
