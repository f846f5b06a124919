"""``workspace runs``: the local history, newest first, filtered by task and limited."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from workspace_adapter.base.globals import Globals
from workspace_adapter.cli import main

MakeWorkspace = Callable[[str], Globals]

TOML = """
[workspace]
[[workspace.tasks]]
id = "ok"
kind = "command"
command = ["true"]
[[workspace.tasks]]
id = "bad"
kind = "command"
command = ["false"]
"""


def test_runs_lists_newest_first_with_filters_and_json(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace(TOML)
    root = str(g.workspace_root)
    assert main(["--workspace-root", root, "runs"]) == 0
    assert "no runs yet" in capsys.readouterr().out
    assert not (g.workspace_root / ".workspace").exists()
    for task_id in ("ok", "bad", "ok"):
        main(["--workspace-root", root, "run", task_id])
    capsys.readouterr()

    assert main(["--workspace-root", root, "runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in lines] == ["ok", "bad", "ok"]
    assert "failed" in lines[1] and "exited with code 1" in lines[1]

    assert main(["--workspace-root", root, "runs", "ok", "--limit", "1", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert list(document) == ["runs"]
    [record] = document["runs"]
    assert record["taskId"] == "ok" and record["status"] == "completed"
    assert set(record) >= {"id", "startedAt", "finishedAt", "exitCode", "slot", "runIds"}


def test_a_bad_limit_exits_2(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace(TOML)
    assert main(["--workspace-root", str(g.workspace_root), "runs", "--limit", "0"]) == 2
    assert "--limit must be at least 1" in capsys.readouterr().err


def test_a_huge_limit_means_all(
    make_workspace: MakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    g = make_workspace(TOML)
    root = str(g.workspace_root)
    main(["--workspace-root", root, "run", "ok"])
    capsys.readouterr()
    assert main(["--workspace-root", root, "runs", "--limit", str(10**30), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["runs"]) == 1
