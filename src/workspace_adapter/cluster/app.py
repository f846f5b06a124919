"""The Celery application both sides share: broker, queue, task name and delivery rules.

Delivery is at least once, execution at most once at a time: a message is acknowledged only
when its step ended (``acks_late``), a worker lost mid-task gives its message back
(``reject_on_worker_lost``), and Redis hands an unacknowledged message to another worker once
the visibility timeout has passed, which is set just above the longest step timeout of the
worker's flows so a step that still runs is never handed out twice. The run's lease
(:mod:`~workspace_adapter.cluster.lease`) makes a second delivery wait or step back.

The run's end is stored by the worker under the run's own keys (:mod:`runstream`), which is
this application's result store: Celery's own results are ignored.
"""

from __future__ import annotations

import math
from typing import Any

from celery import Celery

TASK_NAME = "workspace.run_step"
DEFAULT_QUEUE = "workspace"
VISIBILITY_MARGIN_SECONDS = 3
"""Above the longest step timeout: the time a worker needs to stop a step and say so."""
RESTORE_EVERY_SECONDS = 1
"""How often each worker looks for messages whose visibility timeout has passed."""


def visibility_timeout(longest_step_ms: int) -> int:
    """Seconds a delivered message stays invisible: just above the longest step."""
    return math.ceil(longest_step_ms / 1000) + VISIBILITY_MARGIN_SECONDS


def celery_app(broker: str, *, longest_step_ms: int = 300_000, sender: bool = False) -> Celery:
    """The application for ``broker`` (see the module docstring).

    A ``sender`` (the backend) gives up on an unreachable broker at once instead of retrying
    inside Celery: the executor retries with its own backoff and says why in the meantime.
    """
    app = Celery("workspace", broker=broker, set_as_current=False)
    transport: dict[str, Any] = {
        "visibility_timeout": visibility_timeout(longest_step_ms),
        "unacked_restore_interval": RESTORE_EVERY_SECONDS,
        "unacked_restore_throttle": 1,
        "socket_keepalive": True,
        "socket_connect_timeout": 5,
    }
    if sender:
        transport.update(max_retries=1, interval_start=0, interval_step=0.2, interval_max=0.2)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_default_queue=DEFAULT_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_publish_retry=False,  # the executor retries with its own backoff, and says so
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_channel_error_retry=True,
        broker_transport_options=transport,
        broker_pool_limit=8,
    )
    return app
