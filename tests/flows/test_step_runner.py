"""The step runner against real subprocesses: protocol, env, output bounds, timeouts, kills."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from support.processes import gone

from workspace_adapter.base.tails import TAIL_BYTES
from workspace_adapter.flows.executor import LocalExecutor, StepExecutor
from workspace_adapter.flows.package import FlowPackage, FlowStep, load_flow
from workspace_adapter.flows.runner import StepInvocation, StepOutcome, run_step
from workspace_adapter.flows.stepfiles import KEEP_BYTES, PUNCH_STEP, first_data, punch_hole

MakeFlow = Callable[..., Path]
EVENT: dict[str, Any] = {"id": "evt-1", "type": "go", "payload": {"n": 1}}


def python_flow(make_flow: MakeFlow, script: str, *, timeout_ms: int = 10_000) -> FlowPackage:
    folder = make_flow(
        "py",
        f"""
        [config]
        answer = 42
        [[steps]]
        name = "s"
        runner = "python"
        script = "step.py"
        timeout_ms = {timeout_ms}
        [steps.trigger]
        type = "go"
        """,
        files={"step.py": script},
    )
    return load_flow(folder)


def command_flow(make_flow: MakeFlow, argv: list[str], *, timeout_ms: int = 10_000) -> FlowPackage:
    folder = make_flow(
        "cmd",
        f"""
        [[steps]]
        name = "c"
        runner = "command"
        command = {json.dumps(argv)}
        timeout_ms = {timeout_ms}
        [steps.trigger]
        type = "go"
        """,
    )
    return load_flow(folder)


def invocation(package: FlowPackage, tmp_path: Path, **extra: Any) -> StepInvocation:
    step: FlowStep = package.steps[0]
    return StepInvocation(
        package=package,
        step=step,
        event=EVENT,
        run_id="run_0123456789ab",
        workspace_root=tmp_path,
        workspace_backend_url="ws://127.0.0.1:9",
        launched_by="test",
        **extra,
    )


async def test_context_on_stdin_lines_streamed_and_result(
    make_flow: MakeFlow, tmp_path: Path
) -> None:
    script = """
        import json, sys
        ctx = json.load(sys.stdin)
        print("hello")
        print("warn", file=sys.stderr)
        print('FLOW_RESULT {"status": "skipped"}')
        print("FLOW_RESULT " + json.dumps({"status": "changed", "message": "ok",
                                           "artifacts": {"ctx": ctx}}))
    """
    package = python_flow(make_flow, script)
    lines: list[tuple[str, str]] = []
    pids: list[int] = []
    outcome = await run_step(
        invocation(package, tmp_path, replay=True),
        on_line=lambda stream, line: lines.append((stream, line)),
        on_started=pids.append,
    )
    assert outcome.status == "completed", outcome.error
    assert (outcome.result_status, outcome.flow_status, outcome.exit_code) == (
        "changed",
        "changed",
        0,
    )
    assert outcome.pid == pids[0]
    assert ("stdout", "hello") in lines and ("stderr", "warn") in lines
    assert outcome.stdout_tail.startswith("hello\n") and outcome.stderr_tail == "warn\n"
    ctx = outcome.result["artifacts"]["ctx"]  # type: ignore[index]
    assert ctx == {
        "flow": {
            "name": "py",
            "version": "1.2.3",
            "root": str(package.root),
            "step": "s",
            "config": {"answer": 42},
            "event": EVENT,
        },
        "runtime": {
            "eventId": "evt-1",
            "runId": "run_0123456789ab",
            "attemptId": "run_0123456789ab",
            "replay": True,
            "workspaceBackendUrl": "ws://127.0.0.1:9",
            "workspaceRoot": str(tmp_path),
            "launchedBy": "test",
        },
    }


async def test_env_is_a_whitelist_and_secrets_stay_out(
    make_flow: MakeFlow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEX_WORKSPACE_BACKEND_TOKEN", "tok-secret")
    monkeypatch.setenv("CODEX_FLOW_BACKEND_SECRET", "hmac-secret")
    monkeypatch.setenv("RANDOM_PARENT_VAR", "x")
    monkeypatch.setenv("CODEX_FLOW_FETCH", "0")
    monkeypatch.setenv("EXTRA_ALLOWED", "yes")
    script = """
        import json, os, sys
        import workspace_adapter  # the venv's interpreter can import the package
        print("FLOW_RESULT " + json.dumps({"status": "completed", "artifacts": dict(os.environ)}))
    """
    package = python_flow(make_flow, script)
    outcome = await run_step(invocation(package, tmp_path, env_allow=("EXTRA_ALLOWED",)))
    assert outcome.status == "completed", outcome.error + outcome.stderr_tail  # type: ignore[operator]
    env = outcome.result["artifacts"]  # type: ignore[index]
    assert "CODEX_WORKSPACE_BACKEND_TOKEN" not in env
    assert "CODEX_FLOW_BACKEND_SECRET" not in env
    assert "RANDOM_PARENT_VAR" not in env
    assert "tok-secret" not in json.dumps(env) and "hmac-secret" not in json.dumps(env)
    assert env["CODEX_FLOW_FETCH"] == "0" and env["EXTRA_ALLOWED"] == "yes"
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert env["CODEX_FLOW_EVENT_ID"] == "evt-1"
    assert env["CODEX_FLOW_RUN_ID"] == env["CODEX_FLOW_ATTEMPT_ID"] == "run_0123456789ab"
    assert env["CODEX_FLOW_REPLAY"] == "0"
    assert env["CODEX_WORKSPACE_BACKEND_WS_URL"] == "ws://127.0.0.1:9"
    assert env["CODEX_WORKSPACE_ROOT"] == str(tmp_path)
    assert env["CODEX_FLOW_LAUNCHED_BY"] == "test"


async def test_command_step_through_the_executor_interface(
    make_flow: MakeFlow, tmp_path: Path
) -> None:
    package = command_flow(make_flow, ["printf", 'FLOW_RESULT {"status":"completed"}\\n'])
    executor: StepExecutor = LocalExecutor(kill_grace=1.0)
    outcome = await executor.run(invocation(package, tmp_path))
    assert (outcome.status, outcome.result) == ("completed", {"status": "completed"})


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["sh", "-c", "echo FLOW_RESULT not-json"], "FLOW_RESULT is not valid: JSON is malformed"),
        (
            ["sh", "-c", 'echo \'FLOW_RESULT {"status": "great"}\''],
            "FLOW_RESULT is not valid: Invalid enum value 'great' - at `$.status`",
        ),
        (["sh", "-c", "echo 'FLOW_RESULT [1]'"], "FLOW_RESULT is not valid: expected a JSON"),
        (["sh", "-c", "echo just talking"], "printed no FLOW_RESULT line"),
        (
            ["sh", "-c", 'echo \'FLOW_RESULT {"status":"completed"}\'; exit 3'],
            "exited with code 3",
        ),
        (["sh", "-c", "kill -9 $$"], "killed by signal SIGKILL"),
        (
            ["definitely-not-a-program-xyz"],
            "cannot start the step: program not found: definitely-not-a-program-xyz (not on PATH)",
        ),
    ],
)
async def test_failures_have_a_one_line_reason(
    make_flow: MakeFlow, tmp_path: Path, argv: list[str], reason: str
) -> None:
    outcome = await run_step(invocation(command_flow(make_flow, argv), tmp_path))
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.startswith(reason), outcome.error
    assert "\n" not in outcome.error and outcome.flow_status == "failed"


async def test_bun_runner_without_bun_is_a_clear_failure(
    make_flow: MakeFlow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("bun"):
        monkeypatch.setenv("PATH", "/nonexistent")
    folder = make_flow(
        "bunny",
        """
        [[steps]]
        name = "b"
        runner = "bun"
        script = "step.ts"
        [steps.trigger]
        type = "go"
        """,
        files={"step.ts": "console.log('hi')\n"},
    )
    inv = invocation(load_flow(folder), tmp_path, python="/nonexistent/python")
    outcome = await run_step(inv)
    assert outcome.status == "failed"
    assert "uses runner 'bun' but bun is not on PATH" in (outcome.error or "")


async def test_timeout_kills_the_whole_process_group(make_flow: MakeFlow, tmp_path: Path) -> None:
    script = """
        import subprocess, sys, time
        child = subprocess.Popen(["sleep", "100"])
        print(f"child {child.pid}", flush=True)
        time.sleep(100)
    """
    package = python_flow(make_flow, script, timeout_ms=1500)
    lines: list[str] = []
    started = time.monotonic()
    outcome = await run_step(
        invocation(package, tmp_path), on_line=lambda _s, line: lines.append(line), kill_grace=2
    )
    elapsed = time.monotonic() - started
    assert (outcome.status, outcome.error) == ("failed", "timed out after 1.5s")
    # Both die on SIGTERM: the run does not wait out the 2 s grace.
    assert elapsed < 1.5 + 2
    child = int(next(line for line in lines if line.startswith("child ")).split()[1])
    assert outcome.pid is not None and gone(outcome.pid) and gone(child)


async def test_a_step_ignoring_sigterm_is_killed_after_the_grace(
    make_flow: MakeFlow, tmp_path: Path
) -> None:
    script = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(100)
    """
    package = python_flow(make_flow, script, timeout_ms=500)
    started = time.monotonic()
    outcome = await run_step(invocation(package, tmp_path), kill_grace=1.0)
    elapsed = time.monotonic() - started
    assert outcome.error == "timed out after 0.5s"
    assert elapsed >= 0.5 + 1.0, elapsed
    assert outcome.stdout_tail == "ready\n"
    assert outcome.pid is not None and gone(outcome.pid)


async def test_a_leftover_child_holding_the_pipes_does_not_hang_the_run(
    make_flow: MakeFlow, tmp_path: Path
) -> None:
    argv = ["sh", "-c", 'sleep 100 & echo "child $!"; echo \'FLOW_RESULT {"status":"completed"}\'']
    lines: list[str] = []
    started = time.monotonic()
    outcome = await run_step(
        invocation(command_flow(make_flow, argv), tmp_path),
        on_line=lambda _s, line: lines.append(line),
    )
    assert outcome.status == "completed"
    # DRAIN_GRACE (1 s) for the pipes, not the 5 s kill grace: the child goes on SIGTERM.
    assert time.monotonic() - started < 5.0
    child = int(next(line for line in lines if line.startswith("child ")).split()[1])
    assert gone(child)


async def test_a_50_mb_flood_keeps_memory_bounded(make_flow: MakeFlow, tmp_path: Path) -> None:
    script = """
        import sys
        out = sys.stdout.buffer
        line = b"x" * 1023 + b"\\n"
        for _ in range(25 * 1024):
            out.write(line)
        out.write(b"y" * (25 * 1024 * 1024))  # one 25 MB line, no newline yet
        out.write(b"\\nFLOW_RESULT {\\"status\\": \\"completed\\"}\\n")
        sys.stderr.buffer.write(b"e" * (3 * 1024 * 1024))
    """
    package = python_flow(make_flow, script)
    count = 0
    longest = 0

    def on_line(_stream: str, line: str) -> None:
        nonlocal count, longest
        count += 1
        longest = max(longest, len(line))

    tracemalloc.start()
    try:
        outcome = await run_step(invocation(package, tmp_path), on_line=on_line)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.status == "completed", outcome.error
    assert len(outcome.stdout_tail.encode()) <= TAIL_BYTES
    assert len(outcome.stderr_tail.encode()) <= TAIL_BYTES
    assert outcome.stdout_tail.endswith('FLOW_RESULT {"status": "completed"}\n')
    assert count == 25 * 1024 + 3
    assert longest < 17 * 1024
    assert peak < 8 * 1024 * 1024, peak


async def test_cancel_event_returns_a_canceled_outcome(make_flow: MakeFlow, tmp_path: Path) -> None:
    script = """
        import time
        print("working", flush=True)
        time.sleep(100)
    """
    package = python_flow(make_flow, script)
    cancel = anyio.Event()

    def on_line(_stream: str, line: str) -> None:
        if line == "working":
            cancel.set()

    outcome = await run_step(invocation(package, tmp_path), on_line=on_line, cancel=cancel)
    assert (outcome.status, outcome.error, outcome.flow_status) == ("canceled",) * 3
    assert outcome.stdout_tail == "working\n"
    assert outcome.pid is not None and gone(outcome.pid)


# A step that starts a long ``sleep`` child, prints its pid, then sleeps itself.
PARENT_OF_A_SLEEPER = """
    import subprocess, time
    child = subprocess.Popen(["sleep", "100"])
    print(f"child {child.pid}", flush=True)
    time.sleep(100)
"""


async def test_cancelling_the_caller_kills_the_group_and_reraises(
    make_flow: MakeFlow, tmp_path: Path
) -> None:
    package = python_flow(make_flow, PARENT_OF_A_SLEEPER)
    pids: list[int] = []
    outcomes: list[StepOutcome] = []

    def on_line(_stream: str, line: str) -> None:
        if line.startswith("child "):
            pids.append(int(line.split()[1]))
            scope.cancel()

    with anyio.CancelScope() as scope:
        outcomes.append(
            await run_step(
                invocation(package, tmp_path),
                on_line=on_line,
                on_started=pids.append,
                kill_grace=2,
            )
        )
    assert scope.cancelled_caught and outcomes == []
    assert len(pids) == 2 and all(gone(pid) for pid in pids)


async def test_a_failing_on_started_callback_still_stops_the_step(
    make_flow: MakeFlow, tmp_path: Path
) -> None:
    # The backend records the pid in on_started; if that write fails the step must not be
    # left running with nobody reading its pipes.
    package = python_flow(make_flow, PARENT_OF_A_SLEEPER)
    pids: list[int] = []

    def on_started(pid: int) -> None:
        pids.append(pid)
        raise RuntimeError("store is gone")

    with pytest.raises(RuntimeError, match="store is gone"):
        await run_step(invocation(package, tmp_path), on_started=on_started, kill_grace=2)
    assert len(pids) == 1
    assert gone(pids[0])


async def test_a_flood_keeps_the_run_folder_small_on_disk(
    make_flow: MakeFlow, tmp_path: Path
) -> None:
    """The output files keep their size but not their blocks: what was read is punched out."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"x" * (8 * 1024 * 1024))
    with probe.open("r+b") as handle:
        if not punch_hole(handle.fileno(), 0, 4 * 1024 * 1024):
            pytest.skip("this file system cannot punch holes")
    script = """
        import sys
        line = b"z" * 1023 + b"\\n"
        for _ in range(40 * 1024):
            sys.stdout.buffer.write(line)
        sys.stdout.buffer.write(b'FLOW_RESULT {"status": "changed"}\\n')
        sys.stdout.flush()
        # Stay alive a moment: the result line must survive the punching that follows.
        sys.stdout.buffer.write(line * (8 * 1024))
    """
    package = python_flow(make_flow, script)
    run_dir = tmp_path / "run"
    outcome = await run_step(invocation(package, tmp_path), run_dir=run_dir)
    assert (outcome.status, outcome.result_status) == ("completed", "changed"), outcome.error
    stdout = (run_dir / "stdout").stat()
    assert stdout.st_size == (48 * 1024) * 1024 + len(b'FLOW_RESULT {"status": "changed"}\n')
    assert stdout.st_blocks * 512 <= KEEP_BYTES + PUNCH_STEP + 1024 * 1024


async def test_an_event_id_with_a_nul_byte_fails_the_run_with_one_line(
    make_flow: MakeFlow, tmp_path: Path
) -> None:
    """An event stored before ids were checked for NUL: the run fails, the runner does not."""
    package = python_flow(make_flow, "print('never runs')")
    outcome = await run_step(invocation(package, tmp_path, event_id="bad\0id"))
    assert outcome.status == "failed"
    assert outcome.error is not None and "null byte" in outcome.error
    assert "\n" not in outcome.error


def test_a_follower_starts_at_the_data_a_file_has_and_never_past_new_bytes(
    tmp_path: Path,
) -> None:
    """first_data: 0 for an empty file (bytes appended later are read, not skipped: the race
    that lost a trivial step's FLOW_RESULT line), the end of a file of holes, else its data."""
    path = tmp_path / "out"
    path.write_bytes(b"")
    with path.open("r+b") as handle:
        assert first_data(handle.fileno()) == 0
        handle.write(b"\0" * (2 * 1024 * 1024) + b"tail\n")
        handle.flush()
        if not punch_hole(handle.fileno(), 0, 1024 * 1024):
            pytest.skip("this file system cannot punch holes")
        assert first_data(handle.fileno()) == 1024 * 1024
    sparse = tmp_path / "holes"
    with sparse.open("w+b") as handle:
        handle.truncate(1024 * 1024)  # all holes: what is appended next is new
        assert first_data(handle.fileno()) == 1024 * 1024


async def test_a_step_that_ended_in_time_is_not_timed_out_by_slow_listeners(
    make_flow: MakeFlow, tmp_path: Path
) -> None:
    """Output read at a slow listener's pace past the step's timeout: the step ended in time,
    so the run is judged by how it ended, and every line still reaches the listener."""
    script = """
        import sys
        for n in range(40):
            print("x" * 2000)
        print('FLOW_RESULT {"status": "changed"}')
    """
    package = python_flow(make_flow, script, timeout_ms=1000)
    lines: list[str] = []

    async def slow() -> None:
        await anyio.sleep(0.05)  # 40 paced reads: about 2 s, twice the step's timeout

    outcome = await run_step(
        invocation(package, tmp_path), on_line=lambda _s, line: lines.append(line), pace=slow
    )
    assert (outcome.status, outcome.result_status) == ("completed", "changed"), outcome.error
    assert len(lines) == 41
