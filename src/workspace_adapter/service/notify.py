"""``[workspace.notify] command``: tell a person when an attempt needs one.

The command gets the attempt as JSON on stdin (the hook for a chat message or a mail). It is
best effort: a notify command that fails, hangs or is missing is logged, never fatal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import msgspec

from workspace_adapter.logs import get_logger
from workspace_adapter.service.records import Attempt

NOTIFY_STATUSES = frozenset({"blocked", "needs_intervention", "failed"})
NOTIFY_TIMEOUT = 60.0


def needs_notice(attempt: Attempt) -> bool:
    return attempt.status in NOTIFY_STATUSES


async def notify(
    command: list[str], attempt: Attempt, root: Path, timeout: float = NOTIFY_TIMEOUT
) -> bool:
    """Run ``command`` with ``attempt`` on stdin; True when it exited 0."""
    log = get_logger(component="notify", attempt_id=attempt.id, argv=command)
    env = dict(os.environ)
    # As for command tasks: `workspace` resolves to this installation.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["WORKSPACE_ATTEMPT_ID"] = attempt.id
    env["WORKSPACE_ATTEMPT_STATUS"] = attempt.status
    try:
        with anyio.fail_after(timeout):
            done = await anyio.run_process(
                command,
                input=msgspec.json.encode(attempt) + b"\n",
                cwd=root,
                env=env,
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
    except TimeoutError:
        log.warning("notify.failed", error=f"timed out after {timeout:g}s; killed")
        return False
    except OSError as exc:
        log.warning("notify.failed", error=f"cannot run the notify command: {exc}")
        return False
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        log.warning("notify.failed", exit_code=done.returncode, stderr=tail)
        return False
    log.info("notify.sent", status=attempt.status)
    return True
