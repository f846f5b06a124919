"""``workspace worker``'s process: a Celery worker whose one task runs a flow step.

The pool is threads: each task thread hands its invocation to the process's
:class:`~workspace_adapter.cluster.execution.WorkerRuntime` and waits, so the steps are
children of this one process and die with it (:mod:`~workspace_adapter.cluster.keeper`).
SIGTERM is Celery's warm shutdown: no new runs, the running ones finish, then the worker exits
(draining); a second SIGTERM or SIGQUIT stops at once, and the unfinished runs are delivered
again elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import signals

from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.redact import redact_url
from workspace_adapter.cluster.app import DEFAULT_QUEUE, TASK_NAME, celery_app, visibility_timeout
from workspace_adapter.cluster.execution import Verdict, WorkerRuntime

BUSY_RETRY_SECONDS = 2
"""A run another execution holds is looked at again after this long."""


def run_worker(
    *,
    broker: str,
    root: Path,
    name: str,
    concurrency: int,
    queues: list[str],
) -> int:
    """Serve runs until the worker is stopped; returns its exit code."""
    log = get_logger(component="worker", worker=name)
    runtime = WorkerRuntime(broker, root, name)
    longest = runtime.longest_step_ms()
    app = celery_app(broker, longest_step_ms=longest)

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=None,
    )
    def run_step_task(self: Any, raw: str) -> None:
        if runtime.execute(raw) is Verdict.BUSY:
            raise self.retry(countdown=BUSY_RETRY_SECONDS)

    def ready(**_: Any) -> None:
        log.info(
            "worker.ready",
            broker=redact_url(broker),
            queues=queues,
            concurrency=concurrency,
            visibility_timeout=visibility_timeout(longest),
        )
        print(
            f"workspace worker {name} ready on {redact_url(broker)} "
            f"(queues {', '.join(queues)}; {concurrency} at once)",
            flush=True,
        )

    signals.worker_ready.connect(ready, weak=False)
    runtime.start()
    try:
        worker = app.Worker(
            hostname=name,
            pool="threads",
            concurrency=concurrency,
            queues=queues or [DEFAULT_QUEUE],
            quiet=True,
            without_mingle=True,
            without_gossip=True,
            optimization="fair",
        )
        worker.start()
        code: int = worker.exitcode or 0
    finally:
        runtime.stop()
        log.info("worker.stopped")
    return code
