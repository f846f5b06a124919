"""``workspace serve`` in one process: the backend daemon, the scheduler loop, the watcher.

The backend starts exactly as ``workspace backend`` starts it (same options, store recovery,
URL printed first): :func:`~workspace_adapter.backend.server.serve_backend` runs it, with the
loops as its companion (:class:`ServeLoops`). The scheduler runs the core tick
(:func:`workspace_adapter.local.tick.run_tick`, not the CLI command), aligned to the wall
clock, in a worker thread (a tick is synchronous: SQLite, subprocesses), and logs each decision
and each run (``tick.task``, ``tick.run``) instead of printing them; a flow task's event goes
straight to this process's :class:`~workspace_adapter.backend.service.BackendService`
(:class:`InProcessDispatcher`), not through a WebSocket back into the same process. Command
tasks' live output is not copied to the daemon's streams: their records keep its tails
(``workspace runs``). The watcher runs its passes on the event loop, a client of the backend's
URL. An error in a tick or a pass is logged and the loop goes on.

SIGINT/SIGTERM stop the loops first, so nothing new starts while the backend winds down: a tick
that is running gets :data:`TICK_GRACE_SECONDS` to end, then the backend stops accepting and
cancels its running steps (that also ends a flow task the tick follows), then the process groups
of command tasks still running get SIGTERM (SIGKILL if they linger), so their runs are recorded
``failed`` with the signal instead of being left behind. All of it fits in the 10 s the daemon
allows.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread

from workspace_adapter import protocol as rpc
from workspace_adapter.backend.server import BackendOptions, run_daemon, serve_backend
from workspace_adapter.backend.service import BackendService
from workspace_adapter.base.errors import EXIT_FAILED, UserError
from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.processes import signal_child_groups
from workspace_adapter.local import configfile, taskrun
from workspace_adapter.local.schedule import Decision
from workspace_adapter.local.tick import SlotReport, TickListener, run_tick

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals
    from workspace_adapter.service.watcher import Watcher

TICK_INTERVAL_SECONDS = 60.0
# A tick starts this long after the interval's boundary, so a clock that wakes a hair early
# does not evaluate the schedules one minute behind.
TICK_LAG_SECONDS = 0.05
# What a tick already running may take to end after SIGTERM; the backend's own shutdown
# (up to 5 s before SIGKILL) must still fit in the 10 s an operator's supervisor waits.
TICK_GRACE_SECONDS = 2.0
# After the backend stopped: how long a tick whose command task was signalled may take to end,
# once after SIGTERM and once more after SIGKILL.
TICK_REAP_SECONDS = 1.0
# Until the watcher knows when its next source is due (its first pass, or after an error).
WATCH_RETRY_SECONDS = 60.0


def seconds_to_next_tick(now: float, interval: float) -> float:
    """Seconds from ``now`` (epoch seconds) to just after the next multiple of ``interval``."""
    return interval - (now % interval) + TICK_LAG_SECONDS


class InProcessDispatcher:
    """``serve``'s flow dispatcher: the backend service of this very process.

    Called from the tick's worker thread; the service lives on the event loop. With ``wait``
    the service's dispatch returns once every matched run has ended; their output tails are
    then handed to ``on_output``, so the task's record keeps them as the CLI's would.
    """

    def __init__(self, service: BackendService) -> None:
        self.service = service

    def __call__(
        self,
        event: dict[str, Any],
        *,
        wait: bool,
        timeout: float,
        on_output: taskrun.OutputSink,
    ) -> taskrun.FlowOutcome:
        return anyio.from_thread.run(self._dispatch, event, wait, timeout, on_output)

    async def _dispatch(
        self, event: dict[str, Any], wait: bool, timeout: float, on_output: taskrun.OutputSink
    ) -> taskrun.FlowOutcome:
        try:
            with anyio.fail_after(timeout):
                reply = await self.service.dispatch(event, wait=wait)
        except rpc.RpcFault as fault:
            raise UserError(
                f"backend refused flow.dispatch: {fault} ({fault.code})", EXIT_FAILED
            ) from None
        runs = reply.runs or []
        for run in runs:
            for stream, tail in (("stdout", run.stdoutTail), ("stderr", run.stderrTail)):
                for line in tail.splitlines():
                    on_output(run.id, stream, line)
        duplicate = reply.status == rpc.DispatchStatus.DUPLICATE
        return taskrun.FlowOutcome(reply.matched, reply.runIds, runs, duplicate=duplicate)


class TickLog(TickListener):
    """A tick's decisions and runs as log events: ``tick.task``, then ``tick.run`` per slot.

    Idle and disabled tasks are logged at debug level: a thousand of them tick every minute.
    """

    def __init__(self, log: Any) -> None:
        self.log = log

    def decided(self, decision: Decision) -> None:
        quiet = decision.action in ("idle", "disabled")
        (self.log.debug if quiet else self.log.info)(
            "tick.task",
            task_id=decision.task.id,
            action=decision.action,
            due=decision.due,
            reason=decision.reason,
            next_slot=decision.next_slot.isoformat() if decision.next_slot else None,
        )

    def slot_done(self, report: SlotReport) -> None:
        record = report.record
        fields: dict[str, Any] = {"task_id": report.task_id, "slot": report.slot}
        if record is not None:
            fields |= {"run_id": record.id, "status": str(record.status), "reason": record.reason}
        if report.outcome == "ran":
            fields |= {"exit_code": report.exit_code, "message": report.message}
        quiet = report.outcome == "ran" and report.exit_code == 0
        (self.log.info if quiet else self.log.warning)(f"tick.{report.outcome}", **fields)


class SchedulerLoop:
    """Runs the core tick for this process's workspace, once per interval.

    ``dispatcher`` takes the flow tasks' events (default: the backend at ``g.backend_url``,
    over the WebSocket; ``serve`` passes an :class:`InProcessDispatcher`).
    """

    def __init__(
        self,
        g: Globals,
        interval: float = TICK_INTERVAL_SECONDS,
        dispatcher: taskrun.FlowDispatcher | None = None,
    ) -> None:
        self.g = g
        self.interval = interval
        self.dispatcher = dispatcher
        # Set while no tick runs; the worker thread clears and sets it, the loop reads it.
        self._idle = threading.Event()
        self._idle.set()
        self.log = get_logger(component="serve.tick")
        self._listener = TickLog(self.log)
        discard = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115  # for the loop's life
        self._sinks = taskrun.Sinks(discard, discard)

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    async def run(self) -> None:
        """Tick now (a restart catches up at once), then at each interval boundary."""
        while True:
            self._idle.clear()
            # Abandoned on cancel: a thread cannot be interrupted, so shutdown waits for it
            # through :meth:`wait_idle` with a deadline instead.
            await anyio.to_thread.run_sync(self._tick, abandon_on_cancel=True)
            await anyio.sleep(seconds_to_next_tick(time.time(), self.interval))

    def _tick(self) -> None:
        try:
            # Read each time, so an edit applies without a restart (through the cache).
            config = configfile.load_cached(self.g.workspace_root)
            report = run_tick(
                config,
                mode=self.g.mode,
                backend_url=self.g.backend_url,
                sinks=self._sinks,
                dispatcher=self.dispatcher,
                listener=self._listener,
            )
            self.log.debug("tick.done", exit_code=report.exit_code, tasks=len(report.tasks))
        except UserError as exc:  # a workspace.toml edited into something invalid, say
            self.log.warning("tick.failed", error=exc.message)
        except Exception:
            self.log.exception("tick.failed")
        finally:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a running tick to end; True when none runs."""
        # The event is set by a worker thread, so it is waited on in one too.
        return await anyio.to_thread.run_sync(self._idle.wait, timeout, abandon_on_cancel=True)


async def watch_loop(watcher: Watcher) -> None:
    """The watcher's passes, forever; a pass that raises is logged and the next one comes."""
    log = get_logger(component="serve.watch")
    while True:
        wait = WATCH_RETRY_SECONDS
        try:
            await watcher.run_pass()
            wait = watcher.seconds_to_next_pass()
        except Exception:
            log.exception("watch.pass_failed", retry_in=wait)
        await anyio.sleep(wait)


def end_task_processes(sig: signal.Signals = signal.SIGTERM) -> list[int]:
    """Signal the process groups of this process's children; returns the groups signalled.

    Called once the backend has reaped its steps, so what is left are the command tasks of a
    tick (each leads its own session, so its whole group goes). Linux: children are found in
    ``/proc``; elsewhere nothing is signalled and the grace periods still bound the wait.
    """
    return signal_child_groups(sig)


WatcherFactory = Callable[[str], "Watcher"]


class ServeLoops:
    """The scheduler loop and the watcher, as the backend's companion (see the module doc)."""

    def __init__(self, scheduler: SchedulerLoop, watcher: Watcher | None) -> None:
        self.scheduler = scheduler
        self.watcher = watcher
        self.log = get_logger(component="serve")

    async def run(self) -> None:
        self.log.info(
            "serve.started",
            pid=os.getpid(),
            tick_interval=self.scheduler.interval,
            watching=self.watcher is not None,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.scheduler.run)
            if self.watcher is not None:
                tg.start_soon(watch_loop, self.watcher)

    async def wind_down(self) -> None:
        self.log.info("serve.stopping")
        if not await self.scheduler.wait_idle(TICK_GRACE_SECONDS):
            self.log.warning("serve.tick_still_running", grace=TICK_GRACE_SECONDS)

    async def reap(self) -> None:
        """End a tick still running after the backend stopped: its command's group, then harder.

        The tick's thread cannot be abandoned: the interpreter waits for it at exit.
        """
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.scheduler.idle:
                return
            groups = end_task_processes(sig)
            self.log.warning("serve.ending_task_processes", signal=sig.name, groups=groups)
            await self.scheduler.wait_idle(TICK_REAP_SECONDS)
        if not self.scheduler.idle:
            self.log.error("serve.tick_still_running")


async def serve_workspace(
    options: BackendOptions,
    g: Globals,
    *,
    tick_interval: float,
    make_watcher: WatcherFactory | None,
) -> int:
    """Run the backend and the loops until SIGINT/SIGTERM; returns the exit code.

    ``make_watcher`` builds the watcher for the backend's URL; None when there is no source.
    """

    def loops_for(url: str, service: BackendService) -> ServeLoops:
        scheduler = SchedulerLoop(
            g.replace(backend_url=url), tick_interval, dispatcher=InProcessDispatcher(service)
        )
        return ServeLoops(scheduler, make_watcher(url) if make_watcher is not None else None)

    code = await serve_backend(options, companion=loops_for)
    get_logger(component="serve").info("serve.stopped")
    return code


def run_serve(
    options: BackendOptions,
    g: Globals,
    *,
    tick_interval: float,
    make_watcher: WatcherFactory | None,
) -> int:
    """Synchronous entry point for the CLI."""

    async def main() -> int:
        return await serve_workspace(
            options, g, tick_interval=tick_interval, make_watcher=make_watcher
        )

    return run_daemon(main)
