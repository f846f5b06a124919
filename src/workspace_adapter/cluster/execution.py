"""A worker's side of a run: take its lease, run its step, stream its lines, store its end.

One :class:`WorkerRuntime` per worker process holds an event loop in a thread of its own (an
anyio blocking portal) with the Redis connections, the worker's flow catalog and the step
keeper; Celery's task threads hand it one invocation each and wait. For each run:

1. A run that already ended (``…:done``) is acknowledged and skipped: a redelivered message.
2. The run's lease, or step back (the task is retried later) while another execution holds
   it or still beats (:mod:`~workspace_adapter.cluster.lease`).
3. A run canceled before it started ends ``canceled``; a flow this worker lacks, or whose
   files differ from the backend's, ends ``failed`` with the reason.
4. A fork maintenance run waits for the fork's cluster-wide lock, then refreshes the worker's
   checkout of the fork (:mod:`~workspace_adapter.cluster.forkcache`).
5. The step runs with the same runner as on the backend, in a run folder under
   ``.workspace/worker/runs/``, tied to the worker by a lifeline; its lines go to the run's
   stream in batches, a heartbeat renews the leases and watches for a cancel.
6. The end goes to ``…:done`` and the stream together; then the message is acknowledged.
"""

from __future__ import annotations

import contextlib
import enum
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread
import msgspec
import redis.asyncio
import tenacity
from redis.exceptions import RedisError

from workspace_adapter.base.lifeline import Lifeline
from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.status import Status
from workspace_adapter.base.times import utc_now_iso
from workspace_adapter.cluster import forkcache, lease, runstream
from workspace_adapter.cluster.invocation import PortableInvocation, decode, resolve
from workspace_adapter.cluster.keeper import StepKeeper
from workspace_adapter.flows.catalog import FlowCatalog
from workspace_adapter.flows.runner import (
    DEFAULT_KILL_GRACE,
    StepInvocation,
    StepOutcome,
    run_step,
)
from workspace_adapter.flows.stepfiles import RunFiles

FLUSH_SECONDS = 0.01
"""Lines wait at most this long for others to share their trip to Redis."""
MAX_BUFFERED_LINES = 20_000
"""Lines kept while Redis cannot take them; older ones go first (the tails keep the end)."""
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
WORKER_TTL_SECONDS = 30
WORKER_BEAT_SECONDS = 5.0


T = TypeVar("T")


class Verdict(enum.Enum):
    """What the task does with its message."""

    DONE = "done"  # acknowledge it: the run ended (here or before)
    BUSY = "busy"  # retry later: another execution holds or may still hold the run


class WorkerRuntime:
    """Everything one worker process shares between its runs (see the module docstring)."""

    def __init__(
        self, broker: str, root: Path, name: str, *, kill_grace: float = DEFAULT_KILL_GRACE
    ) -> None:
        self.broker = broker
        self.root = root
        self.name = name
        self.kill_grace = kill_grace
        self.runs_dir = root / ".workspace" / "worker" / "runs"
        self.catalog = FlowCatalog(root)
        self.keeper = StepKeeper()
        self._portal_cm: Any = None
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._redis: Any = None
        self._log = get_logger(component="worker", worker=name)

    # --- life of the worker process --------------------------------------------------------

    def start(self) -> None:
        self._portal_cm = anyio.from_thread.start_blocking_portal("asyncio")
        self._portal = self._portal_cm.__enter__()
        self._portal.call(self._connect)
        self._portal.start_task_soon(self._announce)

    def stop(self) -> None:
        if self._portal is not None:
            with contextlib.suppress(Exception):
                self._portal.call(self._disconnect)
            self._portal_cm.__exit__(None, None, None)
            self._portal = None
        self.keeper.close()

    async def _connect(self) -> None:
        self._redis = redis.asyncio.from_url(
            self.broker, socket_keepalive=True, socket_connect_timeout=5, health_check_interval=15
        )

    async def _disconnect(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(runstream.worker_key(self.name))
        await self._redis.aclose()

    async def _announce(self) -> None:
        """A key with a short life that says this worker is up (``workspace doctor``)."""
        while True:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.set(
                    runstream.worker_key(self.name), utc_now_iso(), ex=WORKER_TTL_SECONDS
                )
            await anyio.sleep(WORKER_BEAT_SECONDS)

    def longest_step_ms(self) -> int:
        steps = [s.timeout_ms for p in self.catalog.packages() for s in p.steps]
        return max(steps, default=300_000)

    def execute(self, raw: str) -> Verdict:
        """Run one invocation to its stored end (from a Celery task thread)."""
        assert self._portal is not None, "start() the runtime first"
        verdict: Verdict = self._portal.call(self._execute, raw)
        return verdict

    # --- one run ---------------------------------------------------------------------------

    async def _execute(self, raw: str) -> Verdict:
        try:
            wanted = decode(raw)
        except ValueError as exc:
            self._log.error("run.unreadable", problem=str(exc))
            return Verdict.DONE  # nothing could ever run it: drop it
        run = _Execution(self, wanted)
        return await run.execute()


class _Execution:
    """One execution of one run on this worker."""

    def __init__(self, runtime: WorkerRuntime, wanted: PortableInvocation) -> None:
        self.rt = runtime
        self.redis = runtime._redis
        self.wanted = wanted
        self.keys = runstream.RunKeys(wanted.run_id)
        self.token = f"{runtime.name}:{uuid.uuid4().hex[:12]}"
        self.lease = lease.Lease(self.redis, self.keys.lock, self.token)
        self.fork_lease: lease.Lease | None = None
        self.cancel = anyio.Event()
        self._buffer: list[dict[str, Any]] = []
        self._dropped = 0
        self._wake = anyio.Event()
        self._flushing = anyio.Lock()
        self._lifeline: Lifeline | None = None
        self.log = runtime._log.bind(run_id=wanted.run_id, event_id=wanted.event_id)

    async def execute(self) -> Verdict:
        try:
            if await self._ask(lambda: self.redis.exists(self.keys.done)):
                self.log.info("run.already_ended")
                return Verdict.DONE
            if not await self._ask(self.lease.acquire):
                self.log.info("run.held_elsewhere", holder=await self._ask(self.lease.holder))
                return Verdict.BUSY
            if await self._ask(
                lambda: lease.earlier_holder_alive(self.redis, self.keys.beat, self.token)
            ):
                self.log.info("run.earlier_execution_alive")
                return Verdict.BUSY
            if await self._ask(lambda: self.redis.exists(self.keys.done)):
                return Verdict.DONE
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat)
                tg.start_soon(self._flusher)
                outcome = await self._run()
                await self._flush()
                tg.cancel_scope.cancel()
            await self._store_end(outcome)
            return Verdict.DONE
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(RedisError, OSError):
                if self.fork_lease is not None:
                    await self.fork_lease.release()
                await self.lease.release()

    async def _run(self) -> StepOutcome:
        started_at = utc_now_iso()
        if await self._ask(lambda: self.redis.exists(self.keys.cancel)):
            return StepOutcome.ended(Status.CANCELED, "canceled before it started", started_at)
        resolved = resolve(self.wanted, self.rt.catalog, self.rt.root, self.rt.name)
        if isinstance(resolved, str):
            self.log.error("run.cannot_run_here", problem=resolved)
            return StepOutcome.ended(Status.FAILED, resolved, started_at)
        fork = forkcache.maintained_fork(resolved)
        if fork is not None:
            held = await self._take_fork(fork, resolved.step.timeout_ms / 1000)
            if held is not None:
                return held
            problem = await anyio.to_thread.run_sync(forkcache.refresh_checkout, fork)
            if problem is not None:
                self._line("stderr", f"workspace worker {self.rt.name}: {problem}")
        outcome = await run_step(
            resolved,
            run_dir=RunFiles.of_run(self.rt.runs_dir, self.wanted.run_id).folder,
            on_line=self._line,
            on_started=self._started,
            cancel=self.cancel,
            kill_grace=self.rt.kill_grace,
        )
        self._let_go()
        if fork is not None:
            outcome = await anyio.to_thread.run_sync(
                forkcache.after_run, fork, outcome, self.rt.name, self._line
            )
        await anyio.to_thread.run_sync(RunFiles.of_run(self.rt.runs_dir, self.wanted.run_id).remove)
        return outcome

    async def _take_fork(self, fork: forkcache.ForkCache, timeout: float) -> StepOutcome | None:
        """Wait for the fork's cluster-wide lock; an outcome when the wait ends without it."""
        started_at = utc_now_iso()
        self.fork_lease = lease.Lease(
            self.redis, runstream.fork_lock_key(fork.repository), self.token
        )
        told = False
        with anyio.move_on_after(timeout):
            while not self.cancel.is_set():
                if await self._ask(self.fork_lease.acquire):
                    return None
                if not told:
                    holder = await self._ask(self.fork_lease.holder)
                    self._line(
                        "stderr",
                        f"workspace worker {self.rt.name}: fork {fork.repository} is busy "
                        f"(held by {(holder or '?').rpartition(':')[0]}); waiting for it",
                    )
                    told = True
                with anyio.move_on_after(lease.HEARTBEAT_SECONDS):
                    await self.cancel.wait()
        if self.cancel.is_set():
            return StepOutcome.ended(
                Status.CANCELED, "canceled while waiting for the fork", started_at
            )
        return StepOutcome(
            status=Status.COMPLETED,
            result={"status": Status.BLOCKED, "message": f"fork busy: {fork.repository}"},
            result_status=Status.BLOCKED,
            started_at=started_at,
            finished_at=utc_now_iso(),
        )

    # --- what the step runner calls ---------------------------------------------------------

    def _started(self, pid: int) -> None:
        self._lifeline = self.rt.keeper.guard(self.wanted.run_id, pid)
        self._push(runstream.start_entry(self.rt.name, pid, self.token))
        self.log.info("step.started", pid=pid, flow=self.wanted.flow, step=self.wanted.step)

    def _let_go(self) -> None:
        if self._lifeline is not None:
            self.rt.keeper.release(self.wanted.run_id, self._lifeline)
            self._lifeline = None

    def _line(self, stream: str, line: str) -> None:
        self._push(runstream.line_entry(stream, line))

    def _push(self, entry: dict[str, Any]) -> None:
        if len(self._buffer) >= MAX_BUFFERED_LINES:
            del self._buffer[0]
            self._dropped += 1
        self._buffer.append(entry)
        self._wake.set()

    # --- Redis ------------------------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            await anyio.sleep(FLUSH_SECONDS)
            await self._flush()

    async def _flush(self) -> None:
        """Everything buffered to the stream, in order; retried with backoff while Redis is
        away."""
        async with self._flushing:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        async for trying in self._until_redis_takes("stream.write_failed"):
            with trying:
                await self._write_buffered()

    async def _write_buffered(self) -> None:
        """One pass over the buffer; a batch Redis did not take goes back in front of it."""
        while self._buffer:
            self._wake = anyio.Event()
            batch, self._buffer = self._buffer, []
            if self._dropped:
                note = f"workspace worker: {self._dropped} lines dropped while Redis was away"
                batch.insert(0, runstream.line_entry("stderr", note))
                self._dropped = 0
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for entry in batch:
                        pipe.xadd(
                            self.keys.stream,
                            entry,
                            maxlen=runstream.STREAM_MAXLEN,
                            approximate=True,
                        )
                    await pipe.execute()
            except BaseException:
                self._buffer[:0] = batch
                raise

    async def _ask(self, question: Callable[[], Awaitable[T]]) -> T:
        """A question to Redis before the step starts, asked again until Redis answers.

        The task's message stays unacknowledged meanwhile: a worker that dies waiting loses
        nothing (it is delivered again), and a Redis pause never fails the run.
        """
        async for trying in self._until_redis_takes("redis.unreachable"):
            with trying:
                return await question()
        raise AssertionError("tenacity without a stop ends in a result")

    def _until_redis_takes(self, event: str) -> tenacity.AsyncRetrying:
        """Tries again while Redis is away, 0.5 s doubling to 10 s, ``event`` logged each time."""

        def failed(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            self.log.warning(event, problem=type(exc).__name__, retry=state.upcoming_sleep)

        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type((RedisError, OSError)),
            wait=tenacity.wait_exponential(multiplier=RETRY_FIRST_SECONDS, max=RETRY_MAX_SECONDS),
            before_sleep=failed,
            sleep=anyio.sleep,
        )

    async def _heartbeat(self) -> None:
        count = 0
        while True:
            count += 1
            try:
                await lease.beat(self.redis, self.keys.beat, self.token, count)
                if not await self.lease.renew():
                    self.log.warning("run.lease_contended", holder=await self.lease.holder())
                if self.fork_lease is not None and self.fork_lease.held:
                    await self.fork_lease.renew()
                if await self.redis.exists(self.keys.cancel) and not self.cancel.is_set():
                    self.log.info("run.cancel_received")
                    self.cancel.set()
            except (RedisError, OSError) as exc:
                self.log.warning("heartbeat.failed", problem=type(exc).__name__)
            await anyio.sleep(lease.HEARTBEAT_SECONDS)

    async def _store_end(self, outcome: StepOutcome) -> None:
        """The end, in ``…:done`` and on the stream at once; retried until Redis takes it."""
        encoded = msgspec.json.encode(outcome)
        async for trying in self._until_redis_takes("run.end_not_stored"):
            with trying:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.set(self.keys.done, encoded, ex=runstream.DONE_TTL_SECONDS)
                    pipe.xadd(
                        self.keys.stream,
                        runstream.end_entry(self.rt.name, outcome),
                        maxlen=runstream.STREAM_MAXLEN,
                        approximate=True,
                    )
                    pipe.expire(self.keys.stream, runstream.DONE_TTL_SECONDS)
                    await pipe.execute()
        self.log.info("step.finished", status=outcome.status, result_status=outcome.result_status)


@contextlib.contextmanager
def running(broker: str, root: Path, name: str) -> Iterator[WorkerRuntime]:
    """A started :class:`WorkerRuntime`, stopped on the way out."""
    runtime = WorkerRuntime(broker, root, name)
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()


def default_name() -> str:
    """``workspace-<pid>@<host>``: unique per process, so two workers on one host differ."""
    return f"workspace-{os.getpid()}@{os.uname().nodename}"


__all__ = ["StepInvocation", "Verdict", "WorkerRuntime", "default_name", "running"]
