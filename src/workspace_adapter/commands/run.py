"""``workspace run TASK``: run one task now, scheduled or not.

``--json`` prints one document on stdout, the run record (the child's output goes to stderr)::

    {"id": "2026-11-24T23-07-55-864Z-1ba8de9a-harness", "taskId": "harness",
     "kind": "command", "status": "completed", "reason": null,
     "startedAt": "2026-11-24T23:07:55.864Z", "finishedAt": "2026-11-24T23:07:58.120Z",
     "exitCode": 0, "stdoutTail": "...", "stderrTail": "...", "eventId": null,
     "runIds": [], "slot": null}

``status`` is one of skipped completed changed needs_intervention blocked canceled failed;
``reason`` says why (``exited with code 3``, ``timed out after 15m; process group killed``,
``program not found: x (not on PATH)``, ``dispatched``, ``backend not reachable``,
``disabled``). Flow tasks fill ``eventId`` and ``runIds``; command tasks ``exitCode``.
Exit codes (docs/statuses.md): 0 completed/changed/skipped, 1 failed/canceled, 2 bad input,
3 blocked/needs_intervention, 4 backend not reachable (the run is still recorded, failed).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from workspace_adapter.base.errors import UserError
from workspace_adapter.base.status import Status
from workspace_adapter.base.times import parse_iso, utc_now
from workspace_adapter.local import configfile, taskrun
from workspace_adapter.local.state import StateStore
from workspace_adapter.local.taskruns import TaskRun, new_task_run

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals


def run(
    g: Globals,
    task_id: str,
    *,
    event_file: str | None = None,
    wait: bool = True,
    as_json: bool = False,
) -> int:
    """Run ``task_id``; returns its exit code (docs/statuses.md)."""
    config, save_config = configfile.open_cached(g.workspace_root)
    task = config.task(task_id)
    override: dict[str, Any] | None = None
    if event_file is not None:
        if task.kind != "flow":
            raise UserError(f"--event only applies to flow tasks; {task.id} is a command task")
        override = taskrun.read_event_file(event_file)
    if task.kind == "flow" and task.enabled:
        from workspace_adapter.client import token_from_env  # a flow task loads it anyway

        token_from_env()  # a blank token is bad input: refused before a run is recorded
    save_config()
    store = StateStore.for_workspace(config.root, g.mode).open()
    try:
        sinks = taskrun.Sinks.for_json(as_json)
        record = new_task_run(task.id, task.kind, utc_now())
        if not task.enabled:
            record.status, record.reason = Status.SKIPPED, "disabled"
            record.finished_at = record.started_at
            store.insert(record)
            execution = taskrun.Execution(
                record, 0, f"warning: {task.id}: skipped: task is disabled"
            )
        else:
            store.insert(record)
            execution = taskrun.execute(
                store,
                config,
                task,
                record,
                mode=g.mode,
                backend_url=g.backend_url,
                sinks=sinks,
                override=override,
                wait=None if wait else False,
            )
    finally:
        store.close()  # here, not at interpreter exit, which cli.main may skip
    report(execution, as_json)
    return execution.exit_code


def report(execution: taskrun.Execution, as_json: bool) -> None:
    record = execution.record
    if execution.message:
        print(execution.message, file=sys.stderr)
    if as_json:
        import json

        sys.stdout.write(
            json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"
        )
    else:
        print(summary(record))


def summary(record: TaskRun) -> str:
    """One line: the task, its status, and why."""
    seconds = ""
    if record.finished_at:
        elapsed = parse_iso(record.finished_at) - parse_iso(record.started_at)
        seconds = f" in {elapsed.total_seconds():.1f}s"
    why = f" ({record.reason})" if record.reason else ""
    return f"{record.task_id}: {record.status}{why}{seconds} [run {record.id}]"
