"""The harness flow's step process: context JSON on stdin, progress lines, one FLOW_RESULT line.

The step protocol: the last stdout line is ``FLOW_RESULT {json}``. Whatever happens this
prints a result and exits 0 once it has one; a traceback only ever goes to a log file.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec

from workspace_adapter.base.status import Status
from workspace_adapter.events import FlowResult
from workspace_adapter.maintenance.outcome import log_traceback, one_line


class FlowContext(msgspec.Struct, kw_only=True):
    name: str | None = None
    version: str | None = None
    root: str | None = None
    step: str | None = None
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    event: dict[str, Any] = msgspec.field(default_factory=dict)


class RuntimeContext(msgspec.Struct, kw_only=True):
    eventId: str | None = None
    runId: str | None = None
    attemptId: str | None = None
    replay: bool | None = None
    workspaceBackendUrl: str | None = None
    workspaceRoot: str | None = None
    launchedBy: str | None = None


class StepContext(msgspec.Struct, kw_only=True):
    """What the runner writes on a step's stdin."""

    flow: FlowContext
    runtime: RuntimeContext = msgspec.field(default_factory=RuntimeContext)


class Terminated(BaseException):
    """SIGTERM from the runner (timeout or cancel): unwind so the fork gets restored."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # A second SIGTERM must not cut the clean-up short; the runner's SIGKILL still can.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated("terminated by SIGTERM (timeout or cancel)")


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def parse_context(raw: str | bytes) -> StepContext:
    """Decode the context; a bad one raises ValueError with a one-line reason."""
    try:
        return msgspec.json.decode(raw, type=StepContext)
    except msgspec.DecodeError as exc:
        raise ValueError(f"step context on stdin is not valid: {exc}") from None


def workspace_root_of(context: StepContext) -> Path:
    """``runtime.workspaceRoot``, else ``$CODEX_WORKSPACE_ROOT``, else the cwd."""
    root = context.runtime.workspaceRoot or os.environ.get("CODEX_WORKSPACE_ROOT")
    return Path(root).expanduser().resolve() if root else Path.cwd()


def run_context(context: StepContext) -> FlowResult:
    """Run the maintenance for one decoded context, printing progress lines as they happen."""
    from workspace_adapter.maintenance.engine import ForkMaintenance
    from workspace_adapter.maintenance.settings import (
        ForkNotConfigured,
        load_config,
        resolve_settings,
        select_fork,
    )

    event = dict(context.flow.event)
    if not event.get("id") and context.runtime.eventId:
        event["id"] = context.runtime.eventId
    payload = event.get("payload")
    payload = payload if isinstance(payload, dict) else None
    try:
        config = select_fork(load_config(context.flow.config), payload)
    except ForkNotConfigured as exc:
        return FlowResult(status=Status.SKIPPED, message=str(exc))
    settings = resolve_settings(config, workspace_root=workspace_root_of(context), payload=payload)
    return ForkMaintenance(settings, event, emit=_print_line).run()


def main() -> int:
    from workspace_adapter.maintenance.settings import SettingsError

    signal.signal(signal.SIGTERM, _on_sigterm)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    try:
        result = run_context(parse_context(sys.stdin.buffer.read()))
    except (ValueError, SettingsError) as exc:
        result = FlowResult(status=Status.FAILED, message=one_line(str(exc)))
    except Terminated as exc:
        result = FlowResult(status=Status.FAILED, message=f"{exc}; the fork was put back as found")
    except Exception as exc:
        root = os.environ.get("CODEX_WORKSPACE_ROOT")
        where = log_traceback(Path(root) if root else Path.cwd(), exc)
        reason = one_line(f"{type(exc).__name__}: {exc}")
        print(f"error: unexpected {reason}{where}", file=sys.stderr)
        result = FlowResult(status=Status.FAILED, message=f"unexpected error: {reason}{where}")
    _print_line(result.line())
    return 0
