"""Where a step runs, behind one interface: today a local subprocess, later something else."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import anyio

from workspace_adapter.flows.output import OnLine
from workspace_adapter.flows.runner import (
    DEFAULT_KILL_GRACE,
    OnStarted,
    Pace,
    StepInvocation,
    StepOutcome,
    attach_step,
    run_step,
)


class StepExecutor(Protocol):
    """Runs one step invocation to its end; the backend and the CLI only talk to this.

    ``run_dir`` is the run's own folder for what the step leaves while it runs (its output
    and exit status, so an outcome survives the death of the process that started it); None
    for a run nothing will look for again. ``pace()`` is awaited between pieces of output: it
    returns once those who stream the lines have room for more.
    """

    @property
    def ready(self) -> bool:
        """False while runs cannot start (a broker that does not answer): they wait queued."""
        ...

    async def until_ready(self) -> None:
        """Return once runs can start again (at once where they always can)."""
        ...

    def status(self) -> dict[str, Any]:
        """What ``/readyz`` and ``doctor`` show: ``{kind, problem, …}``, problem None if ready."""
        ...

    async def run(
        self,
        invocation: StepInvocation,
        *,
        run_dir: Path | None = None,
        on_line: OnLine | None = None,
        on_started: OnStarted | None = None,
        cancel: anyio.Event | None = None,
        pace: Pace | None = None,
    ) -> StepOutcome: ...

    async def attach(
        self,
        run_dir: Path,
        *,
        timeout_ms: int,
        on_line: OnLine | None = None,
        cancel: anyio.Event | None = None,
        pace: Pace | None = None,
    ) -> StepOutcome | None:
        """Take up a run an earlier backend started in ``run_dir``: follow it if its step
        still runs, judge it from its files if it ended; None when they tell nothing."""
        ...


class LocalExecutor:
    """Runs steps as subprocesses of this process (see :func:`run_step`)."""

    def __init__(self, *, kill_grace: float = DEFAULT_KILL_GRACE) -> None:
        self.kill_grace = kill_grace

    @property
    def ready(self) -> bool:
        return True

    async def until_ready(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"kind": "local", "problem": None}

    async def run(
        self,
        invocation: StepInvocation,
        *,
        run_dir: Path | None = None,
        on_line: OnLine | None = None,
        on_started: OnStarted | None = None,
        cancel: anyio.Event | None = None,
        pace: Pace | None = None,
    ) -> StepOutcome:
        return await run_step(
            invocation,
            run_dir=run_dir,
            on_line=on_line,
            on_started=on_started,
            cancel=cancel,
            kill_grace=self.kill_grace,
            pace=pace,
        )

    async def attach(
        self,
        run_dir: Path,
        *,
        timeout_ms: int,
        on_line: OnLine | None = None,
        cancel: anyio.Event | None = None,
        pace: Pace | None = None,
    ) -> StepOutcome | None:
        return await attach_step(
            run_dir,
            timeout_ms=timeout_ms,
            on_line=on_line,
            cancel=cancel,
            kill_grace=self.kill_grace,
            pace=pace,
        )
