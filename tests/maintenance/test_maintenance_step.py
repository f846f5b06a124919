"""flows/patch-moi-harness/step.py end to end: JSON context on stdin, FLOW_RESULT on stdout."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from workspace_adapter.harness import cut_release

FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "flows"
    / "patch-moi-harness"
    / "fixtures"
    / "upstream-release-v0.1.3.json"
)


def flow_result(lines: list[str]) -> dict[str, Any]:
    assert lines and lines[-1].startswith("FLOW_RESULT "), lines[-5:]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("FLOW_RESULT "))
    return result


def test_fixture_event_through_the_step_process(
    step_context: Any, run_step: Any, fork: Path, git: Any
) -> None:
    head = git(fork, "rev-parse", "HEAD")
    event = json.loads(FIXTURE.read_text())
    code, lines, stderr = run_step(
        step_context(event), env={"CODEX_FLOW_FETCH": "0", "CODEX_FLOW_PUSH": "0"}
    )
    assert code == 0, stderr
    result = flow_result(lines)
    assert result["status"] == "completed", result["message"]
    assert result["artifacts"]["eventId"] == "fixture:patch-moi-harness:v0.1.3"
    assert result["artifacts"]["candidateRefs"][0]["sha"] == head
    # By default: one line per phase with its duration, then the result; no commands, and
    # no output of a check that passed.
    phases = [line.split()[0] for line in lines[:-1]]
    assert phases == ["fetch", "rebase", "check", "check", "publish"], lines
    assert lines[0] == "fetch    off (fetch = false): using the tags the fork has"
    assert re.fullmatch(
        r"rebase   main already contains v0\.1\.3; nothing to rebase \(\d+\.\d\ds\)", lines[1]
    )
    assert re.fullmatch(r"check    npm test: passed \(\d+\.\d\ds\)", lines[2])
    assert lines[4].startswith(f"publish  push is off; local refs/heads/main {head[:12]} (")
    assert not any(line.startswith("$ ") or "# pass" in line for line in lines[:-1])
    assert all("\x1b" not in line for line in lines)
    assert git(fork, "status", "--porcelain") == ""


def test_verbose_step_prints_every_command_and_the_tools_output(
    step_context: Any, run_step: Any
) -> None:
    event = json.loads(FIXTURE.read_text())
    env = {"CODEX_FLOW_FETCH": "0", "CODEX_FLOW_PUSH": "0", "CODEX_FLOW_VERBOSE": "1"}
    code, lines, stderr = run_step(step_context(event), env=env)
    assert code == 0, stderr
    assert flow_result(lines)["status"] == "completed"
    # Each command as it runs, then the checks' own output, and the phase lines as well.
    assert "$ git rev-parse --show-toplevel" in lines
    assert "$ bash -c 'npm test'" in lines
    assert any(line.startswith("# pass") for line in lines)
    assert not any(line.startswith("$ git fetch") for line in lines)
    assert any(line.startswith("check    npm test: passed") for line in lines)


def test_release_through_the_step_process_with_env_push(
    workspace_root: Path, step_context: Any, run_step: Any, fork: Path, git: Any
) -> None:
    tag = cut_release(workspace_root, bump="minor")
    assert tag == "v0.2.0"
    event = {
        "id": "e2e:v0.2.0",
        "type": "upstream.release",
        "payload": {
            "repo": "peezy-tech/patch-moi-harness",
            "ref": "refs/tags/v0.2.0",
            "options": {"fetch": True, "push": True},
            "taskId": "harness-flow",
        },
    }
    context = step_context(event, verify_commands=["node --test"])
    code, lines, stderr = run_step(context, env={"CODEX_FLOW_PUSH": "1"})
    assert code == 0, stderr
    result = flow_result(lines)
    assert result["status"] == "changed", result["message"]
    head = git(fork, "rev-parse", "HEAD")
    origin = workspace_root / "harness" / "remotes" / "origin.git"
    assert git(origin, "rev-parse", "refs/heads/main") == head
    assert {r["pushed"] for r in result["artifacts"]["candidateRefs"]} == {True}


def test_options_cannot_turn_push_on(
    step_context: Any, run_step: Any, workspace_root: Path, git: Any
) -> None:
    event = json.loads(FIXTURE.read_text())
    event["payload"]["options"] = {"fetch": False, "push": True}
    code, lines, _ = run_step(step_context(event, verify_commands=["true"]))
    result = flow_result(lines)
    assert code == 0 and result["status"] == "completed"
    assert [r["remote"] for r in result["artifacts"]["candidateRefs"]] == ["local"]
    assert not any(line.startswith("$ git push") for line in lines)


def test_garbage_on_stdin_is_a_failed_result_not_a_traceback(run_step: Any) -> None:
    code, lines, _ = run_step(b"{not json")
    assert code == 0
    result = flow_result(lines)
    assert result["status"] == "failed"
    assert "step context" in result["message"]
    assert not any("Traceback" in line for line in lines)


def test_bad_config_names_the_field(step_context: Any, run_step: Any) -> None:
    event = json.loads(FIXTURE.read_text())
    code, lines, _ = run_step(step_context(event, push_remotes="origin"))
    assert code == 0
    result = flow_result(lines)
    assert result["status"] == "failed"
    assert "push_remotes" in result["message"]


def test_step_resolves_paths_against_workspace_root_not_cwd(
    step_context: Any, run_step: Any, tmp_path: Path
) -> None:
    event = json.loads(FIXTURE.read_text())
    context = step_context(event, fetch=False, verify_commands=["true"])
    code, lines, stderr = run_step(context, cwd=tmp_path)
    assert code == 0, stderr
    result = flow_result(lines)
    assert result["status"] == "completed", result["message"]


def test_sigterm_during_checks_puts_the_fork_back(
    workspace_root: Path, step_context: Any, fork: Path, git: Any
) -> None:
    import os
    import signal
    import subprocess
    import sys

    head = git(fork, "rev-parse", "HEAD")
    git(fork, "switch", "-q", "-c", "topic")
    cut_release(workspace_root)
    event = {
        "id": "e2e:term",
        "type": "upstream.release",
        "payload": {"repo": "peezy-tech/patch-moi-harness", "tag": "v0.1.4"},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_FLOW_")}
    env["CODEX_FLOW_VERBOSE"] = "1"  # the check's command line says when it starts
    proc = subprocess.Popen(
        [sys.executable, str(workspace_root / "flows" / "patch-moi-harness" / "step.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(step_context(event, verify_commands=["sleep 30"])))
    proc.stdin.close()
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("$ bash -c 'sleep 30'"):
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    result = flow_result(lines)
    assert result["status"] == "failed"
    assert "SIGTERM" in result["message"]
    assert git(fork, "symbolic-ref", "--short", "HEAD") == "topic"
    assert git(fork, "rev-parse", "main") == head
    assert git(fork, "status", "--porcelain") == ""
    candidate = git(fork, "rev-parse", "refs/workspace/candidates/v0.1.4")
    assert git(fork, "rev-parse", f"{candidate}~3") == git(fork, "rev-parse", "v0.1.4^{commit}")
