"""The backend's Celery executor: steps run on ``workspace worker`` processes over Redis.

:meth:`CeleryExecutor.run` sends a :class:`~workspace_adapter.cluster.invocation.PortableInvocation`
as a Celery task and follows the run's Redis stream (:mod:`runstream`): ``start`` is the step's
``on_started``, each ``line`` goes to ``on_line`` (paced like local output), ``end`` carries the
outcome the worker's step runner produced. Canceling sets the run's cancel key, which the
worker executing it watches. The run's folder on the backend keeps ``cluster.json`` (the
invocation and how far its stream was read), so a restarted backend re-attaches
(:meth:`CeleryExecutor.attach`): it reads the stored end if the run ended meanwhile, else
follows the stream from where it stopped, and sends the task again when no worker holds the run
(a duplicate is harmless: the run's lease and end make it skip).

While the broker cannot be reached, sending is retried with backoff (the run waits), and
:meth:`status` says why for ``/readyz`` and ``workspace doctor``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec
import redis.asyncio
import tenacity
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.redact import redact_url
from workspace_adapter.base.status import Status
from workspace_adapter.base.times import utc_now_iso
from workspace_adapter.cluster import runstream
from workspace_adapter.cluster.app import DEFAULT_QUEUE, TASK_NAME, celery_app
from workspace_adapter.cluster.invocation import PortableInvocation, encode, portable
from workspace_adapter.flows.output import OnLine
from workspace_adapter.flows.runner import (
    DEFAULT_KILL_GRACE,
    OnStarted,
    Pace,
    StepInvocation,
    StepOutcome,
    attach_step,
)

T = TypeVar("T")
RECORD_NAME = "cluster.json"
READ_BLOCK_MS = 2_000
READ_BATCH = 500
SAVE_POSITION_SECONDS = 1.0
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 5.0
CANCEL_WAIT_EXTRA_SECONDS = 3.0
"""After a cancel, how long past the kill grace to wait for the worker's own end."""
PUBLISHERS = 4
"""Threads that may wait on the broker at once (a paused broker holds them, not the loop)."""


class ClusterRecord(msgspec.Struct, kw_only=True):
    """``cluster.json`` in a run's folder on the backend (see the module docstring)."""

    invocation: PortableInvocation
    position: str = "0-0"
    sent: bool = False


class _Broken(Exception):
    """Redis cannot be reached: the caller waits and tries again."""


class CeleryExecutor:
    """Runs steps on Celery workers (see the module docstring); one per backend."""

    def __init__(
        self,
        broker: str,
        *,
        queue: str = DEFAULT_QUEUE,
        kill_grace: float = DEFAULT_KILL_GRACE,
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.kill_grace = kill_grace
        self.problem: str | None = None
        self._app: Any = None
        self._redis: Any = None
        self._publishers = anyio.CapacityLimiter(PUBLISHERS)
        self._log = get_logger(component="celery-executor", broker=redact_url(broker))

    # --- what the backend asks ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For ``/readyz`` and ``workspace doctor``: the broker, and why it cannot be used."""
        return {"kind": "celery", "broker": redact_url(self.broker), "problem": self.problem}

    @property
    def ready(self) -> bool:
        return self.problem is None

    async def until_ready(self) -> None:
        """Until the broker answers again (runs wait ``queued`` meanwhile)."""
        await self._retrying(lambda: self.redis().ping())

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
        record = ClusterRecord(invocation=portable(invocation))
        if run_dir is not None:
            await anyio.to_thread.run_sync(_save, run_dir, record)
        return await self._drive(record, run_dir, on_line, on_started, cancel, pace)

    async def attach(
        self,
        run_dir: Path,
        *,
        timeout_ms: int,
        on_line: OnLine | None = None,
        cancel: anyio.Event | None = None,
        pace: Pace | None = None,
    ) -> StepOutcome | None:
        record = await anyio.to_thread.run_sync(_load, run_dir)
        if record is None:
            # Started by a local executor before the switch: judged from its files.
            return await attach_step(
                run_dir,
                timeout_ms=timeout_ms,
                on_line=on_line,
                cancel=cancel,
                kill_grace=self.kill_grace,
                pace=pace,
            )
        self._log.info("run.reattached", run_id=record.invocation.run_id)
        return await self._drive(record, run_dir, on_line, None, cancel, pace, attached=True)

    # --- one run -----------------------------------------------------------------------------

    async def _drive(
        self,
        record: ClusterRecord,
        run_dir: Path | None,
        on_line: OnLine | None,
        on_started: OnStarted | None,
        cancel: anyio.Event | None,
        pace: Pace | None,
        *,
        attached: bool = False,
    ) -> StepOutcome:
        keys = runstream.RunKeys(record.invocation.run_id)
        started_at = utc_now_iso()
        follow = _Follower(self, record, keys, run_dir, on_line, on_started, pace)
        canceled = False
        outcome: StepOutcome | None = None
        async with anyio.create_task_group() as tg:

            async def watch_cancel() -> None:
                nonlocal canceled
                assert cancel is not None
                await cancel.wait()
                canceled = True
                # The worker stops the step (grace, then SIGKILL) and stores its end: wait for
                # it, but not for ever: a run no worker took never gets one.
                with anyio.move_on_after(self.kill_grace + CANCEL_WAIT_EXTRA_SECONDS):
                    await self._retrying(lambda: self._set_cancel(keys))
                    await anyio.sleep_forever()
                tg.cancel_scope.cancel()

            if cancel is not None:
                tg.start_soon(watch_cancel)
            if attached:
                ended = await self._retrying(lambda: self._stored_end(keys))
                if ended is not None:
                    tg.cancel_scope.cancel()
                    return ended
                if not await self._retrying(lambda: self._held(keys)):
                    record.sent = False  # nobody runs it: its message may be gone
            if not record.sent:
                await self._send(record)
                if run_dir is not None:
                    await anyio.to_thread.run_sync(_save, run_dir, record)
            outcome = await follow.until_end()
            tg.cancel_scope.cancel()
        if outcome is not None:
            return outcome
        if canceled:
            return StepOutcome.ended(Status.CANCELED, "canceled", started_at)
        return StepOutcome.ended(Status.FAILED, "lost track of the run", started_at)

    async def _send(self, record: ClusterRecord) -> None:
        raw = encode(record.invocation).decode()
        run_id = record.invocation.run_id

        def send() -> None:
            try:
                self._celery().send_task(
                    TASK_NAME, args=[raw], queue=self.queue, task_id=f"{run_id}:{time.time_ns()}"
                )
            except (OperationalError, OSError, RedisError) as exc:
                raise _Broken(
                    f"broker {redact_url(self.broker)} not reachable: cannot send the run "
                    f"({_why(exc)}); runs wait queued until it answers"
                ) from None

        await self._retrying(lambda: anyio.to_thread.run_sync(send, limiter=self._publishers))
        record.sent = True
        self._log.info("run.sent", run_id=run_id, queue=self.queue)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()`` until Redis answers; backoff in between, the problem on show."""
        async for trying in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type((_Broken, RedisError, OSError)),
            wait=tenacity.wait_exponential(multiplier=RETRY_FIRST_SECONDS, max=RETRY_MAX_SECONDS),
            before_sleep=self._unreachable,
            sleep=anyio.sleep,
        ):
            with trying:
                result = await attempt()
                if self.problem is not None:
                    self._log.info("broker.back")
                    self.problem = None
                return result
        raise AssertionError("tenacity without a stop ends in a result")

    def _unreachable(self, state: tenacity.RetryCallState) -> None:
        """Before each wait: the problem on show, logged once for as long as it lasts."""
        exc = state.outcome.exception() if state.outcome is not None else None
        assert exc is not None  # a wait follows a try that failed
        if isinstance(exc, _Broken):
            problem = str(exc)
        else:
            problem = f"broker {redact_url(self.broker)} not reachable: {_why(exc)}"
        if problem != self.problem:
            self._log.warning("broker.unreachable", problem=problem, retry=state.upcoming_sleep)
        self.problem = problem

    # --- Redis -------------------------------------------------------------------------------

    def _celery(self) -> Any:
        if self._app is None:
            self._app = celery_app(self.broker, sender=True)
        return self._app

    def redis(self) -> Any:
        if self._redis is None:
            self._redis = redis.asyncio.from_url(
                self.broker, socket_keepalive=True, socket_connect_timeout=5
            )
        return self._redis

    async def _set_cancel(self, keys: runstream.RunKeys) -> None:
        await self.redis().set(keys.cancel, b"1", ex=runstream.CANCEL_TTL_SECONDS)

    async def _stored_end(self, keys: runstream.RunKeys) -> StepOutcome | None:
        raw = await self.redis().get(keys.done)
        return None if raw is None else runstream.decode_outcome(raw)

    async def _held(self, keys: runstream.RunKeys) -> bool:
        return bool(await self.redis().exists(keys.lock))


class _Follower:
    """Reads one run's stream into the step callbacks until its ``end`` entry."""

    def __init__(
        self,
        executor: CeleryExecutor,
        record: ClusterRecord,
        keys: runstream.RunKeys,
        run_dir: Path | None,
        on_line: OnLine | None,
        on_started: OnStarted | None,
        pace: Pace | None,
    ) -> None:
        self.executor = executor
        self.record = record
        self.keys = keys
        self.run_dir = run_dir
        self.on_line = on_line
        self.on_started = on_started
        self.pace = pace
        self.starts = 0
        self._saved_at = time.monotonic()
        self._log = executor._log.bind(run_id=record.invocation.run_id)

    async def until_end(self) -> StepOutcome | None:
        while True:
            entries = await self.executor._retrying(self._read)
            for entry in entries:
                self.record.position = entry.id
                if entry.kind == "end":
                    return entry.outcome()
                self._take(entry)
            if entries and self.pace is not None:
                await self.pace()
            await self._save_position()

    async def _read(self) -> list[runstream.Entry]:
        reply = await self.executor.redis().xread(
            {self.keys.stream: self.record.position}, count=READ_BATCH, block=READ_BLOCK_MS
        )
        found: list[runstream.Entry] = []
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                found.append(runstream.Entry(_text(entry_id), fields))
        return found

    def _take(self, entry: runstream.Entry) -> None:
        if entry.kind == "line":
            if self.on_line is not None:
                self.on_line(entry.stream, entry.text("l"))
        elif entry.kind == "start":
            self.starts += 1
            worker = entry.text("w")
            self._log.info("run.started_on_worker", worker=worker, pid=entry.text("pid"))
            if self.starts == 1 and self.on_started is not None:
                with contextlib.suppress(ValueError):
                    self.on_started(int(entry.text("pid")))
            elif self.starts > 1 and self.on_line is not None:
                self.on_line("stderr", f"workspace: run started again on worker {worker}")

    async def _save_position(self) -> None:
        if self.run_dir is None or time.monotonic() - self._saved_at < SAVE_POSITION_SECONDS:
            return
        self._saved_at = time.monotonic()
        await anyio.to_thread.run_sync(_save, self.run_dir, self.record)


def _save(run_dir: Path, record: ClusterRecord) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    temporary = run_dir / (RECORD_NAME + ".tmp")
    temporary.write_bytes(msgspec.json.encode(record))
    temporary.replace(run_dir / RECORD_NAME)


def _load(run_dir: Path) -> ClusterRecord | None:
    try:
        return msgspec.json.decode((run_dir / RECORD_NAME).read_bytes(), type=ClusterRecord)
    except (OSError, msgspec.DecodeError):
        return None


def _why(exc: BaseException) -> str:
    # Driver messages may carry the URL (and its password): keep the class and errno only.
    errno = getattr(exc, "errno", None)
    return type(exc).__name__ + (f" (errno {errno})" if errno else "")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
