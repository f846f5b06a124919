"""Where a step runs, behind one interface: today a local subprocess, later something else."""

from __future__ import annotations

from typing import Protocol

import anyio

from workspace_adapter.flows.output import OnLine
from workspace_adapter.flows.runner import (
    DEFAULT_KILL_GRACE,
    OnStarted,
    StepInvocation,
    StepOutcome,
    run_step,
)


class StepExecutor(Protocol):
    """Runs one step invocation to its end; the backend and the CLI only talk to this."""

    async def run(
        self,
        invocation: StepInvocation,
        *,
        on_line: OnLine | None = None,
        on_started: OnStarted | None = None,
        cancel: anyio.Event | None = None,
    ) -> StepOutcome: ...


class LocalExecutor:
    """Runs steps as subprocesses of this process (see :func:`run_step`)."""

    def __init__(self, *, kill_grace: float = DEFAULT_KILL_GRACE) -> None:
        self.kill_grace = kill_grace

    async def run(
        self,
        invocation: StepInvocation,
        *,
        on_line: OnLine | None = None,
        on_started: OnStarted | None = None,
        cancel: anyio.Event | None = None,
    ) -> StepOutcome:
        return await run_step(
            invocation,
            on_line=on_line,
            on_started=on_started,
            cancel=cancel,
            kill_grace=self.kill_grace,
        )
