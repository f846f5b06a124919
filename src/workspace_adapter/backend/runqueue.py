"""The run queue: starts stored runs through a step executor, within the concurrency caps.

At most ``concurrency`` runs at once, and at most ``step.concurrency`` runs of any one step. The
queue holds run ids only (events are read from the store when a run starts), and refuses work
past ``max_pending`` so a burst of dispatches answers ``overloaded`` instead of growing memory.
Where a step actually runs is the :class:`StepExecutor`'s business (a local subprocess today).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter, deque
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.to_thread
import msgspec
import tenacity

from workspace_adapter.backend.records import FlowRun
from workspace_adapter.backend.store import BackendStore
from workspace_adapter.backend.subscriptions import SubscriptionHub
from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.sqlitefile import StoreUnavailable
from workspace_adapter.base.status import Status
from workspace_adapter.base.times import utc_now_iso
from workspace_adapter.events import event_of
from workspace_adapter.flows.executor import StepExecutor
from workspace_adapter.flows.output import OnLine
from workspace_adapter.flows.package import FlowPackage, FlowStep
from workspace_adapter.flows.runner import Pace, StepInvocation, StepOutcome
from workspace_adapter.flows.stepfiles import RunFiles

DEFAULT_MAX_PENDING = 10_000
# A run's end the store could not take is written again after this long, doubling up to the max.
END_RETRY_FIRST_SECONDS = 0.5
END_RETRY_MAX_SECONDS = 10.0
# The timeout of a run taken up after a restart whose flow step is gone (the manifest's default).
ORPHAN_TIMEOUT_MS = 300_000
StepKey = tuple[str, str]


class StepLookup(Protocol):
    """Finds the package and step a stored run names (flows may change between runs)."""

    def find(self, flow_name: str, step_name: str) -> tuple[FlowPackage, FlowStep] | None: ...


class _ActiveRun:
    __slots__ = ("cancel", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.cancel = anyio.Event()


class RunQueue:
    """Queued runs in, finished run records out; see the module docstring."""

    def __init__(
        self,
        *,
        store: BackendStore,
        steps: StepLookup,
        executor: StepExecutor,
        hub: SubscriptionHub,
        workspace_root: Path,
        backend_url: str,
        concurrency: int = 2,
        env_allow: tuple[str, ...] = (),
        max_pending: int = DEFAULT_MAX_PENDING,
        runs_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.steps = steps
        self.executor = executor
        self.hub = hub
        self.workspace_root = workspace_root
        self.backend_url = backend_url
        self.concurrency = concurrency
        self.env_allow = env_allow
        self.max_pending = max_pending
        self.accepting = True
        self._pending: deque[FlowRun] = deque()
        self._active: dict[str, _ActiveRun] = {}
        self._per_step: Counter[StepKey] = Counter()
        self._done: dict[str, anyio.Event] = {}
        self._wake = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._log = get_logger(component="run-queue")
        self.runs_dir = runs_dir if runs_dir is not None else store.path.parent / "runs"
        self._left_running: list[FlowRun] = []
        # Ended runs whose end the store has not taken yet (see the module docstring).
        self._unwritten: dict[str, FlowRun] = {}

    # --- the loop ----------------------------------------------------------------------------

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Start runs as room appears, until :meth:`shutdown` (run it in a task group)."""
        await anyio.to_thread.run_sync(self._sweep_folders)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for run in self._left_running:
                found = self.steps.find(run.flow_name, run.step_name)
                self._claim(run, found)
                tg.start_soon(self._execute, run, found, True)
            self._left_running = []
            task_status.started()
            while self.accepting:
                self._start_ready(tg)
                await self._wake.wait()
                self._wake = anyio.Event()

    def _start_ready(self, tg: anyio.abc.TaskGroup) -> None:
        while len(self._active) < self.concurrency and self._pending:
            picked = self._pick()
            if picked is None:
                return
            run, found = picked
            self._claim(run, found)
            tg.start_soon(self._execute, run, found, False)

    def _claim(self, run: FlowRun, found: tuple[FlowPackage, FlowStep] | None) -> None:
        self._active[run.id] = _ActiveRun(run.id)
        self._done.setdefault(run.id, anyio.Event())
        if found is not None:
            self._per_step[(run.flow_name, run.step_name)] += 1

    def _pick(self) -> tuple[FlowRun, tuple[FlowPackage, FlowStep] | None] | None:
        """The oldest queued run whose step has room (a busy step does not hold up others)."""
        for index, run in enumerate(self._pending):
            found = self.steps.find(run.flow_name, run.step_name)
            if found is None or self._per_step[(run.flow_name, run.step_name)] < max(
                1, found[1].concurrency
            ):
                del self._pending[index]
                return run, found
        return None

    # --- what the service calls --------------------------------------------------------------

    def has_room(self, count: int) -> bool:
        return self.accepting and len(self._pending) + count <= self.max_pending

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        return len(self._active)

    def _sweep_folders(self) -> None:
        """Remove run folders no run left ``running`` names (their ends are stored)."""
        keep = {self._folder(run.id).folder.name for run in self._left_running}
        with contextlib.suppress(OSError):
            for folder in self.runs_dir.iterdir():
                if folder.name not in keep:
                    RunFiles(folder).remove()

    def take_up(self, runs: list[FlowRun]) -> None:
        """Runs an earlier backend left ``running``: taken up when :meth:`serve` starts."""
        self._left_running.extend(runs)

    def record(self, run_id: str) -> FlowRun | None:
        """A run as it stands: its stored record, or its end while the store cannot take it."""
        unwritten = self._unwritten.get(run_id)
        return unwritten if unwritten is not None else self.store.get_run(run_id)

    def submit(self, runs: list[FlowRun]) -> None:
        if not runs:
            return  # an event no flow wants: nothing to wake the loop for
        for run in runs:
            self._done.setdefault(run.id, anyio.Event())
            self._pending.append(run)
            self.hub.run_updated(run.to_wire())
        self._wake.set()

    async def wait_for(self, run_ids: list[str]) -> list[FlowRun]:
        """The runs' records once every one of them has ended."""
        for run_id in run_ids:
            done = self._done.get(run_id)
            if done is not None:
                await done.wait()
        return [r for r in (self.record(i) for i in run_ids) if r is not None]

    async def cancel(self, run_id: str) -> FlowRun | None:
        """Cancel a queued or running run and return its final record (None: no such run)."""
        active = self._active.get(run_id)
        if active is not None:
            active.cancel.set()
            await self._done[run_id].wait()
            return self.record(run_id)
        for index, run in enumerate(self._pending):
            if run.id == run_id:
                del self._pending[index]
                try:
                    await self._finish(
                        run_id,
                        strict=True,
                        status=Status.CANCELED,
                        error="canceled before it started",
                    )
                except StoreUnavailable:
                    self._pending.insert(index, run)  # still queued: the cancel did not happen
                    self._wake.set()
                    raise
                break
        return self.record(run_id)

    async def shutdown(self) -> None:
        """Stop starting runs, cancel the running ones, and wait until they are recorded.

        Queued runs stay queued in the store: the next start picks them up.
        """
        self.accepting = False
        self._wake.set()
        waiting = list(self._active.values())
        for active in waiting:
            active.cancel.set()
        for active in waiting:
            done = self._done.get(active.run_id)
            if done is not None:
                await done.wait()
        for run_id, ended in list(self._unwritten.items()):
            # One last try for ends the store would not take; what is left is taken up from
            # its run folder at the next start.
            with contextlib.suppress(Exception):
                fields = {k: getattr(ended, k) for k in _END_FIELDS}
                record = await self.store.writer.finish_run(run_id, **fields)
                if record is not None:
                    await self._recorded(run_id, record, fields)
            if run_id in self._unwritten:
                self._log.error("run.end_not_recorded", run_id=run_id, retry="at the next start")

    # --- one run -----------------------------------------------------------------------------

    async def _execute(
        self, queued: FlowRun, found: tuple[FlowPackage, FlowStep] | None, left: bool
    ) -> None:
        """Run one claimed run to its recorded end; ``left``: taken up after a restart."""
        run_id = queued.id
        try:
            if left:
                await self._take_up(queued, found)
            else:
                await self._start(queued, found)
        except Exception as exc:
            # Whatever went wrong (the process out of descriptors, a store that cannot be
            # read) ends this run, never the queue with every other run in it.
            log = self._log.bind(run_id=run_id, event_id=queued.event_id)
            error = _failure(log, "run.not_started", "run.crashed", exc)
            try:
                await self._finish(run_id, status=Status.FAILED, error=error)
            except Exception as again:  # left running in the store: the next start takes it up
                _failure(log, "run.end_not_recorded", "run.end_not_recorded", again)
        finally:
            del self._active[run_id]
            if found is not None:
                key = (queued.flow_name, queued.step_name)
                self._per_step[key] -= 1
                if self._per_step[key] <= 0:
                    del self._per_step[key]
            done = self._done.pop(run_id, None)
            if done is not None:
                done.set()
            self._wake.set()

    async def _start(self, queued: FlowRun, found: tuple[FlowPackage, FlowStep] | None) -> None:
        run_id = queued.id
        log = self._log.bind(run_id=run_id, event_id=queued.event_id)
        if found is None:
            await self._finish(
                run_id,
                status=Status.FAILED,
                error=f"flow step {queued.flow_name}/{queued.step_name} no longer exists",
            )
            return
        if not self.executor.ready and not await self._until_ready(self._active[run_id]):
            if self.accepting:  # a client's cancel; at shutdown it stays queued for next time
                await self._finish(
                    run_id, status=Status.CANCELED, error="canceled before it started"
                )
            return
        try:
            run = await self.store.writer.mark_running(run_id)
        except StoreUnavailable as problem:
            # It stays queued in the store: the next start of the backend runs it.
            log.error("run.not_started", reason=problem.reason, problem=problem.message)
            return
        if run is None:
            return
        stored = self.store.get_event(queued.event_id)
        event = None if stored is None else event_of(stored)
        if event is None:
            await self._finish(run_id, status=Status.FAILED, error="its event is not in the store")
            return
        self.hub.run_updated(run.to_wire())
        package, step = found
        invocation = StepInvocation(
            package=package,
            step=step,
            event=event,
            run_id=run_id,
            workspace_root=self.workspace_root,
            replay=run.replay,
            workspace_backend_url=self.backend_url,
            launched_by="workspace-backend",
            env_allow=self.env_allow,
        )

        def on_started(pid: int) -> None:
            log.info("step.started", pid=pid, flow=run.flow_name, step=run.step_name)

        try:
            outcome = await self.executor.run(
                invocation,
                run_dir=self._folder(run_id).folder,
                on_line=self._on_line(run),
                on_started=on_started,
                cancel=self._active[run_id].cancel,
                pace=self._pace(run),
            )
        except Exception as exc:
            error = _failure(log, "step.not_followed", "step.crashed", exc)
            await self._finish(run_id, status=Status.FAILED, error=error)
            return
        await self._record(run_id, outcome)
        log.info("step.finished", status=outcome.status, result_status=outcome.result_status)

    async def _until_ready(self, active: _ActiveRun) -> bool:
        """Wait, queued, until the executor can start runs; False if canceled meanwhile."""
        async with anyio.create_task_group() as tg:

            async def canceled() -> None:
                await active.cancel.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(canceled)
            await self.executor.until_ready()
            tg.cancel_scope.cancel()
        return not active.cancel.is_set()

    async def _take_up(self, run: FlowRun, found: tuple[FlowPackage, FlowStep] | None) -> None:
        log = self._log.bind(run_id=run.id, event_id=run.event_id)
        timeout_ms = found[1].timeout_ms if found is not None else ORPHAN_TIMEOUT_MS
        try:
            outcome = await self.executor.attach(
                self._folder(run.id).folder,
                timeout_ms=timeout_ms,
                on_line=self._on_line(run),
                cancel=self._active[run.id].cancel,
                pace=self._pace(run),
            )
        except Exception as exc:
            error = _failure(log, "step.not_followed", "step.crashed", exc)
            await self._finish(run.id, status=Status.FAILED, error=error)
            return
        if outcome is None:
            log.warning("run.lost", reason="its step left no process, exit status or result")
            await self._finish(run.id, status=Status.FAILED, error="backend restarted")
            return
        log.info("run.taken_up", status=outcome.status, result_status=outcome.result_status)
        await self._record(run.id, outcome)

    def _folder(self, run_id: str) -> RunFiles:
        return RunFiles.of_run(self.runs_dir, run_id)

    def _pace(self, run: FlowRun) -> Pace:
        event_id, run_id = run.event_id, run.id

        async def pace() -> None:
            await self.hub.room_for_output(event_id, run_id)

        return pace

    def _on_line(self, run: FlowRun) -> OnLine:
        event_id, run_id = run.event_id, run.id

        def on_line(stream: str, line: str) -> None:
            self.hub.run_output(event_id, run_id, stream, line)

        return on_line

    async def _record(self, run_id: str, outcome: StepOutcome) -> None:
        await self._finish(
            run_id,
            status=outcome.status,
            result_status=outcome.result_status,
            result=outcome.result,
            error=outcome.error,
            exit_code=outcome.exit_code,
            stdout_tail=outcome.stdout_tail,
            stderr_tail=outcome.stderr_tail,
        )

    async def _finish(self, run_id: str, *, strict: bool = False, **fields: Any) -> None:
        """Record a run's end (committed off the loop) and tell the subscribers.

        When the store cannot take it, ``strict`` raises (:class:`StoreUnavailable`, or the
        error itself); otherwise the end is kept (see :meth:`record`) and written again until
        the store takes it.
        """
        try:
            record = await self.store.writer.finish_run(run_id, **fields)
        except (StoreUnavailable, sqlite3.Error, OSError) as problem:
            if strict:
                raise
            self._log.error(
                "run.end_not_recorded",
                run_id=run_id,
                status=fields.get("status"),
                reason=getattr(problem, "reason", "error"),
                problem=str(problem),
                retry="until the store takes it",
            )
            record = self._keep(run_id, fields)
        else:
            if record is not None:
                await self._forget_folder(run_id)
        if record is not None:
            self.hub.run_updated(record.to_wire())
        if run_id not in self._active:
            done = self._done.pop(run_id, None)
            if done is not None:
                done.set()

    def _keep(self, run_id: str, fields: dict[str, Any]) -> FlowRun | None:
        """Hold an end the store did not take, and write it again in the background."""
        try:
            stored = self.store.get_run(run_id)
        except (sqlite3.Error, OSError) as exc:
            # Not even readable: the run stays running in the store, and the next start of
            # the backend judges it from what its step left in its folder.
            self._log.error("run.end_not_kept", run_id=run_id, problem=str(exc))
            return None
        if stored is None or stored.terminal:
            return None
        ended = msgspec.structs.replace(
            stored,
            **{k: fields[k] for k in _END_FIELDS if k in fields},
            completed_at=utc_now_iso(),
        )
        first = run_id not in self._unwritten
        self._unwritten[run_id] = ended
        if first and self._tg is not None:
            self._tg.start_soon(self._write_again, run_id, fields)
        return ended

    async def _write_again(self, run_id: str, fields: dict[str, Any]) -> None:
        """Write a kept end until the store takes it: first after 0.5 s, then doubling to 10 s."""

        def not_recorded(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, Exception) and not isinstance(exc, StoreUnavailable):
                # An error the store does not classify: logged, and still only this run's.
                _failure(self._log.bind(run_id=run_id), "run.end_not_recorded", "run.crashed", exc)

        await anyio.sleep(END_RETRY_FIRST_SECONDS)
        async for trying in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(Exception),
            wait=tenacity.wait_exponential(
                multiplier=2 * END_RETRY_FIRST_SECONDS, max=END_RETRY_MAX_SECONDS
            ),
            before_sleep=not_recorded,
            sleep=anyio.sleep,
        ):
            with trying:
                record = await self.store.writer.finish_run(run_id, **fields)
        await self._recorded(run_id, record, fields)

    async def _recorded(self, run_id: str, record: FlowRun | None, fields: dict[str, Any]) -> None:
        """A kept end is stored at last: no longer kept, its folder gone, its listeners told."""
        self._unwritten.pop(run_id, None)
        self._log.info("run.end_recorded", run_id=run_id, status=fields.get("status"))
        await self._forget_folder(run_id)
        if record is not None:
            self.hub.run_updated(record.to_wire())

    async def _forget_folder(self, run_id: str) -> None:
        """The run's end is stored: what its step left on disk is no longer needed."""
        folder = self._folder(run_id)
        if folder.folder.exists():
            await anyio.to_thread.run_sync(folder.remove)


_END_FIELDS = (
    "status",
    "result_status",
    "result",
    "error",
    "exit_code",
    "stdout_tail",
    "stderr_tail",
)


_MACHINE_TROUBLE = (OSError, sqlite3.Error, StoreUnavailable)


def machine_trouble(exc: BaseException) -> str | None:
    """What went wrong, in one line, when ``exc`` is the machine's trouble and not a bug: out
    of descriptors, a full disk, a store that cannot be read or written. An exception group
    (a step is followed in a task group) counts when every error in it is such trouble."""
    if isinstance(exc, _MACHINE_TROUBLE):
        return str(exc)
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(_MACHINE_TROUBLE)
        if matched is not None and rest is None:
            return "; ".join(dict.fromkeys(_leaves(matched)))
    return None


def _leaves(group: BaseExceptionGroup[Any]) -> list[str]:
    found: list[str] = []
    for inner in group.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            found += _leaves(inner)
        else:
            found.append(str(inner))
    return found


def _failure(log: Any, trouble: str, crash: str, exc: Exception) -> str:
    """Log why a run could not go on and return the error its record keeps.

    The machine's trouble (see :func:`machine_trouble`) is one line naming the problem, logged
    as ``trouble``; anything else is a bug in this program and is logged as ``crash`` with its
    traceback.
    """
    problem = machine_trouble(exc)
    if problem is not None:
        log.error(trouble, problem=problem)
        return f"the backend could not run the step: {problem}"
    log.exception(crash, exc_info=exc)
    return f"internal error: {exc}"
