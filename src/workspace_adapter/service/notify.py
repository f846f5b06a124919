"""``[workspace.notify] command``: tell a person when an attempt needs one.

The command gets the attempt as JSON on stdin (the hook for a chat message or a mail). It is
best effort: a notify command that fails, hangs, ignores its stdin or is missing is logged,
never fatal. It leads its own process group, so a timeout stops what it started too (SIGTERM,
then SIGKILL after :data:`NOTIFY_KILL_GRACE`); what it leaves running after exiting on its
own, a mail sent in the background, is left alone.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import anyio
import anyio.abc
import msgspec

from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.processes import path_with_interpreter, spawn_async, stop_group_async
from workspace_adapter.base.status import NEEDS_PERSON, Status
from workspace_adapter.base.tails import OutputTail
from workspace_adapter.service.schema import Attempt

NOTIFY_TIMEOUT = 60.0
# Short: a notify command stopped with the watcher must fit in the daemon's shutdown.
NOTIFY_KILL_GRACE = 2.0


def needs_notice(attempt: Attempt) -> bool:
    return attempt.status in NEEDS_PERSON or attempt.status == Status.FAILED


async def _feed(process: anyio.abc.Process, data: bytes) -> None:
    """Write ``data`` to the command's stdin; a command that does not read it is no error."""
    assert process.stdin is not None
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await process.stdin.send(data)
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await process.stdin.aclose()


async def _tail(process: anyio.abc.Process, into: OutputTail) -> None:
    """Drain stderr (a full pipe would stall the command), keeping its end for the log."""
    assert process.stderr is not None
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        async for chunk in process.stderr:
            into.add(chunk)


async def notify(
    command: list[str], attempt: Attempt, root: Path, timeout: float = NOTIFY_TIMEOUT
) -> bool:
    """Run ``command`` with ``attempt`` on stdin; True when it exited 0 within ``timeout``."""
    log = get_logger(component="notify", attempt_id=attempt.id, argv=command)
    env = dict(os.environ)
    # As for command tasks: `workspace` resolves to this installation.
    env["PATH"] = path_with_interpreter(env.get("PATH"))
    env["WORKSPACE_ATTEMPT_ID"] = attempt.id
    env["WORKSPACE_ATTEMPT_STATUS"] = attempt.status
    try:
        process, group = await spawn_async(
            command,
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        log.warning("notify.failed", error=f"cannot run the notify command: {exc}")
        return False
    stderr = OutputTail()
    returncode: int | None = None
    try:
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_tail, process, stderr)
                await _feed(process, msgspec.json.encode(attempt) + b"\n")
                returncode = await process.wait()
                # A child it left behind may hold stderr open: do not wait for it.
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if returncode is None:  # timed out, or the watcher is stopping: all of it goes
                await stop_group_async(process, group, NOTIFY_KILL_GRACE)
            await process.aclose()
    if returncode is None:
        log.warning("notify.failed", error=f"timed out after {timeout:g}s; stopped")
        return False
    if returncode != 0:
        tail = stderr.text().strip().splitlines()[-3:]
        log.warning("notify.failed", exit_code=returncode, stderr=tail)
        return False
    log.info("notify.sent", status=attempt.status)
    return True
