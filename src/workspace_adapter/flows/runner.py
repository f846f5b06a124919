"""Run one flow step as a local subprocess, following the step protocol of SPEC §6.

The step gets its JSON context on stdin and a whitelisted environment; its stdout and stderr
are streamed line by line and only a bounded tail is kept; its result is the last
``FLOW_RESULT {json}`` line on stdout. The step runs in its own session so a timeout or a
cancellation can kill everything it started, not just the process we spawned.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec

from workspace_adapter.base.processes import spawn_async, stop_group_async
from workspace_adapter.base.status import Status
from workspace_adapter.base.times import utc_now_iso
from workspace_adapter.flows.bun import bun_argv, code_mode_refusal
from workspace_adapter.flows.output import (
    OnLine,
    StreamCapture,
    parse_result,
)
from workspace_adapter.flows.package import FlowPackage, FlowStep

DEFAULT_KILL_GRACE = 5.0
# After the step's main process exits, how long its pipes may stay open (a leftover child
# holding them) before the rest of its process group is killed.
DRAIN_GRACE = 1.0
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


class StepInvocation(msgspec.Struct, kw_only=True):
    """Everything one run of one step needs: what to run, for which event, and its ids."""

    package: FlowPackage
    step: FlowStep
    event: dict[str, Any]
    run_id: str
    workspace_root: Path
    event_id: str | None = None  # default: the event's id
    attempt_id: str | None = None  # default: the run id (SPEC §6)
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
        # The interpreter's folder first: ``workspace`` and ``python`` resolve to this install.
        env["PATH"] = os.pathsep.join([os.path.dirname(self.python), env.get("PATH") or os.defpath])
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
    def flow_status(self) -> str:
        """SPEC §4: the step's own status when the run completed, else failed or canceled."""
        if self.status == Status.COMPLETED and self.result_status:
            return self.result_status
        return self.status


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
    if isinstance(exc, FileNotFoundError):
        return f"cannot start {program!r}: program not found; install it or fix the step's argv"
    if isinstance(exc, PermissionError):
        return f"cannot start {program!r}: permission denied; make it executable"
    return f"cannot start {program!r}: {exc.strerror or exc}"


async def _feed(stream: anyio.abc.ByteSendStream | None, data: bytes) -> None:
    if stream is None:
        return
    # A step that never reads its stdin, or exits early, is not an error of ours.
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await stream.send(data)
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await stream.aclose()


class _Flags:
    canceled = False


async def run_step(
    invocation: StepInvocation,
    *,
    on_line: OnLine | None = None,
    on_started: OnStarted | None = None,
    cancel: anyio.Event | None = None,
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> StepOutcome:
    """Run one step to its end and report how it went.

    ``on_line(stream, line)`` gets each line as it is printed (``stream`` is ``"stdout"`` or
    ``"stderr"``); ``on_started(pid)`` fires once the process exists. Setting ``cancel``
    stops the step and returns a ``canceled`` outcome with its output tails. Cancelling the
    calling task instead kills the step's process group the same way and re-raises.
    """
    step = invocation.step
    started_at = utc_now_iso()
    env = invocation.environment()
    argv: list[str] = []
    try:
        argv = _argv(invocation, env)
        if not step.cwd.is_dir():
            raise _StartError(f"step folder {step.cwd} does not exist; fix the step's cwd")
        process, group = await spawn_async(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=step.cwd,
            env=env,
        )
    except _StartError as exc:
        return StepOutcome(
            status=Status.FAILED, error=str(exc), started_at=started_at, finished_at=utc_now_iso()
        )
    except OSError as exc:
        return StepOutcome(
            status=Status.FAILED,
            error=_start_error(argv, exc),
            started_at=started_at,
            finished_at=utc_now_iso(),
        )
    out = StreamCapture("stdout", on_line)
    err = StreamCapture("stderr", on_line)
    flags = _Flags()
    timeout = step.timeout_ms / 1000
    # From here on the process exists: whatever fails (even ``on_started``) must stop it.
    try:
        if on_started is not None:
            on_started(process.pid)
        payload = msgspec.json.encode(invocation.context()) + b"\n"
        with anyio.move_on_after(timeout) as deadline:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_feed, process.stdin, payload)
                if process.stdout is not None:
                    tg.start_soon(out.pump, process.stdout)
                if process.stderr is not None:
                    tg.start_soon(err.pump, process.stderr)
                if cancel is not None:
                    tg.start_soon(_watch_cancel, cancel, tg.cancel_scope, flags)
                await process.wait()
                with anyio.move_on_after(DRAIN_GRACE):
                    await out.closed.wait()
                    await err.closed.wait()
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            # Also for a step that exited on its own: a child it left behind goes too.
            await stop_group_async(process, group, kill_grace)
            await process.aclose()
    out.finish()
    err.finish()
    result, result_error = parse_result(out.result_line, out.result_dropped)
    exit_code = process.returncode
    error: str | None = None
    status = Status.FAILED
    if flags.canceled:
        status, error = Status.CANCELED, "canceled"
    elif deadline.cancelled_caught:
        error = f"timed out after {timeout:.1f}s"
    elif exit_code is not None and exit_code < 0:
        error = f"killed by signal {_signal_name(-exit_code)}"
    elif exit_code:
        error = f"exited with code {exit_code}"
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
        pid=process.pid,
    )


async def _watch_cancel(cancel: anyio.Event, scope: anyio.CancelScope, flags: _Flags) -> None:
    await cancel.wait()
    flags.canceled = True
    scope.cancel()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
