"""Run one flow step as a local subprocess, following the step protocol (docs/api.md).

The step gets its JSON context on stdin and a whitelisted environment; its stdout and stderr
are streamed line by line and only a bounded tail is kept; its result is the last
``FLOW_RESULT {json}`` line on stdout. The step runs in its own session so a timeout or a
cancellation can kill everything it started, not just the process we spawned.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec

from workspace_adapter.base import status as status_rule
from workspace_adapter.base.processes import (
    ProcessGroup,
    exit_reason,
    path_with_interpreter,
    process_alive,
    spawn,
    start_failure,
    stop_group_after,
    wait_exit,
)
from workspace_adapter.base.status import Status
from workspace_adapter.base.times import parse_iso, utc_now, utc_now_iso
from workspace_adapter.flows.bun import bun_argv, code_mode_refusal
from workspace_adapter.flows.output import (
    OnLine,
    StreamCapture,
    parse_result,
)
from workspace_adapter.flows.package import FlowPackage, FlowStep
from workspace_adapter.flows.stepfiles import (
    PACED_READ,
    READ_BUDGET,
    SH,
    WRAPPER,
    FileFollower,
    RunFiles,
    StepRecord,
)

DEFAULT_KILL_GRACE = 5.0
# How often a running step's output files are looked at: often while it prints, less often
# while it is quiet. Its end is noticed at once (a pidfd), whatever the interval.
POLL_MIN_SECONDS = 0.01
POLL_MAX_SECONDS = 0.2
ENV_WHITELIST: tuple[str, ...] = (
    "PATH",
    "HOME",
    "LANG",
    "TMPDIR",
    "SSH_AUTH_SOCK",
    "CODEX_FLOW_FETCH",
    "CODEX_FLOW_PUSH",
    "CODEX_FLOW_VERBOSE",
)


OnStarted = Callable[[int], None]
Pace = Callable[[], Awaitable[None]]


class StepInvocation(msgspec.Struct, kw_only=True):
    """Everything one run of one step needs: what to run, for which event, and its ids."""

    package: FlowPackage
    step: FlowStep
    event: dict[str, Any]
    run_id: str
    workspace_root: Path
    event_id: str | None = None  # default: the event's id
    attempt_id: str | None = None  # default: the run id
    replay: bool = False
    workspace_backend_url: str = ""
    launched_by: str = "backend"
    env_allow: tuple[str, ...] = ()
    python: str = sys.executable

    @property
    def resolved_event_id(self) -> str:
        return self.event_id if self.event_id is not None else str(self.event.get("id", ""))

    def context(self) -> dict[str, Any]:
        """The JSON document written to the step's stdin."""
        return {
            "flow": {
                "name": self.package.name,
                "version": self.package.version,
                "root": str(self.package.root),
                "step": self.step.name,
                "config": self.package.config,
                "event": self.event,
            },
            "runtime": {
                "eventId": self.resolved_event_id,
                "runId": self.run_id,
                "attemptId": self.attempt_id or self.run_id,
                "replay": self.replay,
                "workspaceBackendUrl": self.workspace_backend_url,
                "workspaceRoot": str(self.workspace_root),
                "launchedBy": self.launched_by,
            },
        }

    def environment(self, parent: Mapping[str, str] | None = None) -> dict[str, str]:
        """Only whitelisted parent variables, so a backend token or secret never reaches a step."""
        source = os.environ if parent is None else parent
        env = {k: source[k] for k in (*ENV_WHITELIST, *self.env_allow) if k in source}
        env["PATH"] = path_with_interpreter(env.get("PATH"), self.python)
        env.update(
            {
                "CODEX_FLOW_EVENT_ID": self.resolved_event_id,
                "CODEX_FLOW_RUN_ID": self.run_id,
                "CODEX_FLOW_ATTEMPT_ID": self.attempt_id or self.run_id,
                "CODEX_FLOW_REPLAY": "1" if self.replay else "0",
                "CODEX_WORKSPACE_BACKEND_WS_URL": self.workspace_backend_url,
                "CODEX_WORKSPACE_ROOT": str(self.workspace_root),
                "CODEX_FLOW_LAUNCHED_BY": self.launched_by,
            }
        )
        if self.step.runner == "python":
            # Without it a Python step's lines arrive in 8 KiB blocks instead of as they happen.
            env["PYTHONUNBUFFERED"] = "1"
        return env


class StepOutcome(msgspec.Struct, kw_only=True):
    """How a step run ended; ``result`` is the FLOW_RESULT object as the step printed it."""

    status: Status
    started_at: str
    finished_at: str
    result: dict[str, Any] | None = None
    result_status: str | None = None
    error: str | None = None
    exit_code: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    pid: int | None = None

    @property
    def flow_status(self) -> Status:
        """The step's own status when the run completed, else failed or canceled (the
        rule of :func:`~workspace_adapter.base.status.flow_status`, as the backend's runs use)."""
        return status_rule.flow_status(self.status, self.result_status)

    @classmethod
    def ended(cls, status: Status, error: str, started_at: str | None = None) -> StepOutcome:
        """A run that ended before its step ran (failed to start, canceled, lost): ``status``
        and why, ended now; ``started_at`` is when it was asked to start (now when not given).
        """
        now = utc_now_iso()
        return cls(status=status, error=error, started_at=started_at or now, finished_at=now)


class _StartError(Exception):
    pass


def _argv(invocation: StepInvocation, env: Mapping[str, str]) -> list[str]:
    step = invocation.step
    if step.runner == "python":
        return [invocation.python, str(step.script)]
    if step.runner == "bun":
        bun = shutil.which("bun", path=env.get("PATH"))
        if bun is None:
            raise _StartError(
                f"step {step.name!r} uses runner 'bun' but bun is not on PATH; install bun "
                "(https://bun.sh) or pass its folder with PATH"
            )
        assert step.script is not None  # the manifest requires a script for bun steps
        return bun_argv(bun, step.script)
    if step.runner == "code-mode":
        raise _StartError(code_mode_refusal(invocation.package.name, step.name))
    return list(step.command or ())


def _start_error(argv: list[str], exc: OSError) -> str:
    program = argv[0] if argv else "?"
    return f"cannot start the step: {start_failure(program, exc)}; check the step's command"


class _Flags:
    canceled = False


class _Leader:
    """The process a step run waits on: the step's ``sh`` wrapper, our child or not."""

    def __init__(self, pid: int, group: ProcessGroup, popen: subprocess.Popen[bytes] | None):
        self.pid = pid
        self.group = group
        self.popen = popen  # None: left by an earlier backend (not ours to reap)
        self.ended = anyio.Event()

    async def wait(self) -> None:
        await wait_exit(self.pid)
        if self.popen is not None:
            self.popen.wait()  # already ended: this only reaps it
        self.ended.set()

    def exit_code(self, files: RunFiles) -> int | None:
        if self.popen is not None:
            return self.popen.returncode
        return files.exit_code()


def _start(
    argv: list[str], files: RunFiles, payload: bytes, env: dict[str, str], cwd: Path
) -> tuple[subprocess.Popen[bytes], ProcessGroup]:
    """Write the run's folder and start the step in it (blocking: call it in a thread)."""
    files.prepare(payload)
    out = files.open_output(files.stdout)
    try:
        err = files.open_output(files.stderr)
        try:
            with files.context.open("rb") as stdin:
                return spawn(
                    [SH, "-c", WRAPPER, str(files.folder), *argv],
                    stdin=stdin,
                    stdout=out,
                    stderr=err,
                    cwd=cwd,
                    env=env,
                )
        finally:
            os.close(err)
    finally:
        os.close(out)


def _resolve(argv: list[str], env: Mapping[str, str], cwd: Path) -> list[str]:
    """``argv`` with its program as a path, refused up front as the shell would refuse it."""
    program = argv[0] if argv else ""
    if not program:
        raise _StartError("the step's command is empty; give it an argv")
    if "/" in program:
        found: str | None = str(cwd / program)
        if not os.path.isfile(found or ""):
            found = None
    else:
        found = shutil.which(program, mode=os.F_OK, path=env.get("PATH"))
    if found is None:
        raise _StartError(_start_error(argv, FileNotFoundError(program)))
    if not os.access(found, os.X_OK):
        raise _StartError(_start_error(argv, PermissionError(program)))
    return [found, *argv[1:]]


async def run_step(
    invocation: StepInvocation,
    *,
    run_dir: Path | None = None,
    on_line: OnLine | None = None,
    on_started: OnStarted | None = None,
    cancel: anyio.Event | None = None,
    kill_grace: float = DEFAULT_KILL_GRACE,
    pace: Pace | None = None,
) -> StepOutcome:
    """Run one step to its end and report how it went.

    The step's files go to ``run_dir`` (see :mod:`~workspace_adapter.flows.stepfiles`; a
    temporary folder when None); the caller removes it once the outcome is safe.
    ``on_line(stream, line)`` gets each line as it is printed (``stream`` is ``"stdout"`` or
    ``"stderr"``); ``on_started(pid)`` fires once the process exists. Setting ``cancel``
    stops the step and returns a ``canceled`` outcome with its output tails. Cancelling the
    calling task instead kills the step's process group the same way and re-raises.
    """
    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix="workspace-step-") as temporary:
            return await run_step(
                invocation,
                run_dir=Path(temporary),
                on_line=on_line,
                on_started=on_started,
                cancel=cancel,
                kill_grace=kill_grace,
                pace=pace,
            )
    step = invocation.step
    started_at = utc_now_iso()
    env = invocation.environment()
    files = RunFiles(run_dir)
    argv: list[str] = []
    try:
        argv = _argv(invocation, env)
        if not step.cwd.is_dir():
            raise _StartError(f"step folder {step.cwd} does not exist; fix the step's cwd")
        argv = _resolve(argv, env, step.cwd)
        payload = msgspec.json.encode(invocation.context()) + b"\n"
        if cancel is not None and cancel.is_set():
            return StepOutcome.ended(Status.CANCELED, "canceled", started_at)
        # Forking a process blocks for milliseconds: not on the event loop. Shielded: a step
        # that was started is stopped below, never left behind by a cancel landing meanwhile.
        with anyio.CancelScope(shield=True):
            popen, group = await anyio.to_thread.run_sync(
                _start, argv, files, payload, env, step.cwd
            )
    except _StartError as exc:
        return StepOutcome.ended(Status.FAILED, str(exc), started_at)
    except OSError as exc:
        return StepOutcome.ended(Status.FAILED, _start_error(argv, exc), started_at)
    except ValueError as exc:  # a NUL byte in argv or env (an event id stored long ago)
        return StepOutcome.ended(
            Status.FAILED,
            f"cannot start the step: {exc} in its command or environment; "
            "fix the event or the step's command",
            started_at,
        )
    leader = _Leader(popen.pid, group, popen)
    try:
        files.started(StepRecord(pid=popen.pid, marker=group.marker, startedAt=started_at))
        if on_started is not None:
            on_started(popen.pid)
        await anyio.lowlevel.checkpoint()  # a cancel that came during the spawn lands here
    except BaseException:
        # From here on the process exists: whatever fails (even ``on_started``) must stop it.
        with anyio.CancelScope(shield=True):
            await stop_group_after(leader.wait, group, kill_grace)
        raise
    return await _follow(
        leader, files, started_at, step.timeout_ms / 1000, on_line, cancel, kill_grace, pace
    )


async def attach_step(
    run_dir: Path,
    *,
    timeout_ms: int,
    on_line: OnLine | None = None,
    cancel: anyio.Event | None = None,
    kill_grace: float = DEFAULT_KILL_GRACE,
    pace: Pace | None = None,
) -> StepOutcome | None:
    """Take up a step an earlier process started in ``run_dir`` and report how it ends.

    A step still running is followed and awaited (its timeout counted from its start); a step
    that ended is judged from its exit code and its FLOW_RESULT line. None when the folder
    tells nothing: no step was started there, or it left neither an exit code nor a result.
    """
    files = RunFiles(run_dir)
    record = await anyio.to_thread.run_sync(files.step_record)
    if record is None:
        return None
    if process_alive(record.pid, record.marker):
        leader = _Leader(record.pid, ProcessGroup(record.pid, record.marker), None)
        elapsed = _seconds_since(record.startedAt)
        return await _follow(
            leader,
            files,
            record.startedAt,
            max(0.0, timeout_ms / 1000 - elapsed),
            on_line,
            cancel,
            kill_grace,
            pace,
        )
    # Read in a thread, so its lines are not streamed (listeners live on the event loop).
    ended = await anyio.to_thread.run_sync(_ended_outcome, files, record, None)
    return ended


def _followers(files: RunFiles, on_line: OnLine | None) -> tuple[FileFollower, FileFollower]:
    return (
        FileFollower(files.stdout, StreamCapture("stdout", on_line), files),
        FileFollower(files.stderr, StreamCapture("stderr", on_line), files),
    )


def _read_to_end(followers: tuple[FileFollower, ...]) -> None:
    """What is left in the files, then close them (the step has ended)."""
    for follower in followers:
        while follower.read():
            pass
        follower.close()
        follower.capture.finish()


def _ended_outcome(
    files: RunFiles, record: StepRecord, on_line: OnLine | None
) -> StepOutcome | None:
    followers = _followers(files, on_line)
    _read_to_end(followers)
    out, err = followers[0].capture, followers[1].capture
    code = files.exit_code()
    if code is None and out.result_line is None and files.saved_result() is None:
        return None
    return _outcome(files, out, err, record.startedAt, code, timed_out=None, canceled=False)


def _seconds_since(iso_time: str) -> float:
    try:
        return max(0.0, (utc_now() - parse_iso(iso_time)).total_seconds())
    except ValueError:
        return 0.0


async def _follow(
    leader: _Leader,
    files: RunFiles,
    started_at: str,
    timeout: float,
    on_line: OnLine | None,
    cancel: anyio.Event | None,
    kill_grace: float,
    pace: Pace | None,
) -> StepOutcome:
    """Follow a started step's files until it ends (or times out, or is canceled).

    The timeout and a cancel count only while the step runs: once it has ended, the rest of
    its output is read at its listeners' pace whatever they cost, and the run is judged by
    how the step ended. A step stopped early has only its tail read, without streaming it.
    """
    followers = _followers(files, on_line)
    flags = _Flags()
    ended_in_time = False
    try:
        with anyio.move_on_after(timeout) as deadline:
            async with anyio.create_task_group() as tg:
                tg.start_soon(leader.wait)
                if cancel is not None:
                    tg.start_soon(_watch_cancel, cancel, tg.cancel_scope, flags)
                await _pump(followers, leader.ended, pace, until_ended=True)
                ended_in_time = True
                tg.cancel_scope.cancel()
        if ended_in_time:
            await _pump(followers, leader.ended, pace)
    finally:
        with anyio.CancelScope(shield=True):
            # Also for a step that exited on its own: a child it left behind goes too.
            await stop_group_after(leader.wait, leader.group, kill_grace)
            if not ended_in_time:  # stopped early: what it printed meanwhile is not streamed
                for follower in followers:
                    follower.skip_to_tail()
            _read_to_end(followers)
    return _outcome(
        files,
        followers[0].capture,
        followers[1].capture,
        started_at,
        leader.exit_code(files),
        timed_out=timeout if deadline.cancelled_caught and not ended_in_time else None,
        canceled=flags.canceled and not ended_in_time,
        pid=leader.pid,
    )


async def _pump(
    followers: tuple[FileFollower, ...],
    ended: anyio.Event,
    pace: Pace | None,
    *,
    until_ended: bool = False,
) -> None:
    """Read the files as they grow until the step's leader has ended and all is read
    (``until_ended``: only until it has ended).

    With ``pace``, each small read waits for it: the lines go out no faster than the slowest
    listener takes them (the step itself never waits: it writes to a file).
    """
    delay = POLL_MIN_SECONDS
    budget = READ_BUDGET if pace is None else PACED_READ
    while True:
        done = ended.is_set()
        if done and until_ended:
            return
        got, more = 0, False
        for follower in followers:
            read = follower.read(budget)
            got += read
            more = more or read >= budget
            if read and pace is not None:
                await pace()
        if more:
            await anyio.lowlevel.checkpoint()
            continue
        if done:
            return
        delay = POLL_MIN_SECONDS if got else min(delay * 2, POLL_MAX_SECONDS)
        with anyio.move_on_after(delay):
            await ended.wait()


def _outcome(
    files: RunFiles,
    out: StreamCapture,
    err: StreamCapture,
    started_at: str,
    exit_code: int | None,
    *,
    timed_out: float | None,
    canceled: bool,
    pid: int | None = None,
) -> StepOutcome:
    result_line, dropped = out.result_line, out.result_dropped
    if result_line is None:
        result_line, dropped = files.saved_result(), 0
    result, result_error = parse_result(result_line, dropped)
    error: str | None = None
    status = Status.FAILED
    if canceled:
        status, error = Status.CANCELED, "canceled"
    elif timed_out is not None:
        error = f"timed out after {timed_out:.1f}s"
    elif exit_code:
        error = exit_reason(exit_code)
    elif result_error:
        error = result_error
    else:
        status = Status.COMPLETED
    return StepOutcome(
        status=status,
        result=result,
        result_status=str(result["status"]) if result is not None else None,
        error=error,
        exit_code=exit_code,
        stdout_tail=out.tail_text(),
        stderr_tail=err.tail_text(),
        started_at=started_at,
        finished_at=utc_now_iso(),
        pid=pid,
    )


async def _watch_cancel(cancel: anyio.Event, scope: anyio.CancelScope, flags: _Flags) -> None:
    await cancel.wait()
    flags.canceled = True
    scope.cancel()
