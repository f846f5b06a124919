"""``workspace flow run`` and ``workspace flow list``, in-process and as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.processes import gone

from workspace_adapter.cli import main

MakeFlow = Callable[..., Path]
REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = (sys.executable, "-m", "workspace_adapter")

# The step prints a line on each stream, then the result the event asks for.
ECHO_STEP = """
    import json, sys
    ctx = json.load(sys.stdin)
    payload = ctx["flow"]["event"]["payload"]
    print("rebasing onto", payload.get("tag"))
    print("a warning", file=sys.stderr)
    if payload.get("exit"):
        sys.exit(payload["exit"])
    print("FLOW_RESULT " + json.dumps(payload["result"]))
"""

DEMO_TOML = """
    [[steps]]
    name = "maintain"
    runner = "python"
    script = "step.py"
    [steps.trigger]
    type = "upstream.release"
    schema = "payload.schema.json"
"""

SCHEMA = {"type": "object", "required": ["tag"], "properties": {"tag": {"type": "string"}}}

CHANGED: dict[str, Any] = {
    "status": "changed",
    "message": "rebased main onto v0.1.4",
    "artifacts": {
        "releaseTag": "v0.1.4",
        "beforeSha": "1111111aaaaaaa",
        "afterSha": "2222222bbbbbbb",
        "checks": [
            {"name": "npm test", "status": "passed", "seconds": 1.25},
            {"name": "npm run pack:dry-run", "status": "passed", "seconds": 0.5},
        ],
        "candidateRefs": [
            {"remote": "local", "ref": "refs/heads/main", "sha": "2222222bbbbbbb", "pushed": False}
        ],
    },
}


def event(payload: dict[str, Any], type_: str = "upstream.release") -> dict[str, Any]:
    return {"id": "evt-1", "type": type_, "payload": payload}


@pytest.fixture
def demo(make_flow: MakeFlow, tmp_path: Path) -> Path:
    """A workspace root with flow ``demo`` whose fixture asks for a ``changed`` result."""
    make_flow(
        "demo",
        DEMO_TOML,
        files={
            "step.py": ECHO_STEP,
            "payload.schema.json": SCHEMA,
            "fixtures/a-release.json": event({"tag": "v0.1.4", "result": CHANGED}),
            "fixtures/b-other.json": event({"tag": "never-used", "result": {"status": "failed"}}),
        },
    )
    return tmp_path


def run(root: Path, *args: str) -> int:
    return main(["--workspace-root", str(root), "flow", *args])


def write_event(tmp_path: Path, document: object, name: str = "event.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_human_output_streams_lines_then_summarises(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(demo, "run", "demo") == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("── demo/maintain (run_")
    assert lines[1] == "rebasing onto v0.1.4"
    assert err == "a warning\n"
    assert "FLOW_RESULT" not in out
    assert lines[2].startswith("demo/maintain: changed (")
    assert lines[3:] == [
        "  rebased main onto v0.1.4",
        "  tag     v0.1.4",
        "  sha     1111111 → 2222222",
        "  check   npm test: passed  1.2s",
        "  check   npm run pack:dry-run: passed  0.5s",
        "  ref     local refs/heads/main 2222222 (not pushed)",
    ]


def test_json_prints_only_the_flow_result(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(demo, "run", "demo", "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == CHANGED
    assert err.splitlines() == ["rebasing onto v0.1.4", "a warning"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("completed", 0),
        ("skipped", 0),
        ("blocked", 3),
        ("needs_intervention", 3),
        ("failed", 1),
    ],
)
def test_exit_code_follows_the_step_status(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], status: str, code: int
) -> None:
    path = write_event(tmp_path, event({"tag": "v1", "result": {"status": status}}))
    assert run(demo, "run", "demo", "--event", str(path), "--json") == code
    assert json.loads(capsys.readouterr().out) == {"status": status}


def test_a_crashing_step_is_failed_with_its_reason(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_event(tmp_path, event({"tag": "v1", "exit": 3}))
    assert run(demo, "run", "demo", "--event", str(path)) == 1
    out = capsys.readouterr().out
    assert "demo/maintain: failed" in out and "  reason: exited with code 3" in out
    assert run(demo, "run", "demo", "--event", str(path), "--json") == 1
    assert json.loads(capsys.readouterr().out) == {
        "status": "failed",
        "message": "exited with code 3",
    }


def test_no_matching_step_is_skipped_with_a_warning(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong_type = write_event(tmp_path, event({"tag": "v1"}, type_="something.else"))
    assert run(demo, "run", "demo", "--event", str(wrong_type)) == 0
    out, err = capsys.readouterr()
    assert out == "skipped\n"
    assert "warning: no step of demo listens to event type 'something.else'" in err
    assert "upstream.release" in err
    no_tag = write_event(tmp_path, event({"result": {}}), "no-tag.json")
    assert run(demo, "run", "demo", "--event", str(no_tag), "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "skipped"
    assert "payload: 'tag' is a required property (trigger schema payload.schema.json)" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "event.json: event file not found; pass an existing --event FILE"),
        ('{"id": "x",\n  nope}', "event.json:2: not valid JSON: Expecting property name"),
        ({"type": "upstream.release"}, "event.json: event.id is required"),
        ({"id": "x", "type": ""}, "event.json: event.type is required"),
        ({"id": "x", "type": "t", "payload": []}, "event.json: invalid event: Expected `object`"),
    ],
)
def test_bad_event_files_exit_2_naming_file_and_field(
    demo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: object,
    expected: str,
) -> None:
    path = tmp_path / "event.json"
    if content is not None:
        write_event(tmp_path, content)
    assert run(demo, "run", "demo", "--event", str(path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err, err
    assert err.count("\n") == 1


def test_unknown_flow_lists_known_ones(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(demo, "run", "nope") == 2
    assert capsys.readouterr().err == "error: unknown flow 'nope'; known flows: demo\n"


def test_a_broken_flow_reports_its_own_error(
    demo: Path, make_flow: MakeFlow, capsys: pytest.CaptureFixture[str]
) -> None:
    make_flow("broken", "[[steps]]\nname = 1\n")
    assert run(demo, "run", "broken") == 2
    assert capsys.readouterr().err == (
        "error: flows/broken/flow.toml:4: steps[0].name: Expected `str`, got `int`; fix its value\n"
    )


def test_no_fixture_asks_for_an_event(
    make_flow: MakeFlow, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_flow("bare", DEMO_TOML, files={"step.py": ECHO_STEP, "payload.schema.json": SCHEMA})
    assert run(tmp_path, "run", "bare") == 2
    err = capsys.readouterr().err
    assert err == "error: flow 'bare' has no flows/bare/fixtures/*.json; pass --event FILE\n"


def test_flow_list_shows_steps_triggers_and_errors(
    demo: Path, make_flow: MakeFlow, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(demo, "list") == 0
    assert capsys.readouterr().out.splitlines() == [
        "demo 1.2.3  flows/demo",
        "  maintain  python  on upstream.release (payload.schema.json)",
    ]
    make_flow("broken", "description = 3\n")
    assert run(demo, "list", "--json") == 2
    document = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in document["flows"]] == ["demo"]
    assert document["flows"][0]["steps"][0]["trigger"] == {
        "type": "upstream.release",
        "schema": "payload.schema.json",
    }
    assert document["errors"] == [
        "flows/broken/flow.toml:3: description: Expected `str`, got `int`; fix its value"
    ]


def test_sigterm_stops_the_step_and_its_children(make_flow: MakeFlow, tmp_path: Path) -> None:
    script = """
        import json, subprocess, sys, time
        json.load(sys.stdin)
        child = subprocess.Popen(["sleep", "100"])
        print(f"child {child.pid}", flush=True)
        time.sleep(100)
    """
    make_flow(
        "hang",
        """
        [[steps]]
        name = "wait"
        runner = "python"
        script = "step.py"
        [steps.trigger]
        type = "go"
        """,
        files={"step.py": script, "fixtures/go.json": {"id": "e", "type": "go"}},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    proc = subprocess.Popen(
        [*WORKSPACE, "--workspace-root", str(tmp_path), "flow", "run", "hang"],
        cwd=tmp_path,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 10
    child = 0
    while time.monotonic() < deadline and not child:
        line = proc.stdout.readline()
        if line.startswith("child "):
            child = int(line.split()[1])
    assert child
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1, err
    assert "hang/wait: canceled" in out
    assert "SIGTERM: stopping the step" in err
    assert gone(child)


HARNESS_RUN = ("flow", "run", "patch-moi-harness", "--json")


def test_harness_flow_end_to_end(workspace_root: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "GIT_"))}
    env.update({"CODEX_FLOW_FETCH": "0", "CODEX_FLOW_PUSH": "0"})
    proc = subprocess.run(
        [*WORKSPACE, "--workspace-root", str(workspace_root), *HARNESS_RUN],
        cwd=workspace_root,
        env={**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["status"] == "completed", result
