"""``workspace runs [TASK]``: the local run history, newest first.

``--json`` prints ``{"runs": [<run record>, ...]}``, each record in the shape
``workspace run --json`` prints (``id, taskId, kind, status, reason, startedAt, finishedAt,
exitCode, stdoutTail, stderrTail, eventId, runIds, slot``). Human output is one line per run:
start time, task, status, duration, reason. Runs whose process died are marked ``failed``,
``interrupted`` first, like every command that opens the state.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from workspace_adapter.base.errors import UserError
from workspace_adapter.base.times import parse_iso
from workspace_adapter.local.state import StateStore
from workspace_adapter.local.taskruns import TaskRun

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals


def runs(g: Globals, task_id: str | None = None, *, limit: int = 20, as_json: bool = False) -> int:
    """Print the newest ``limit`` runs (of ``task_id`` when given); exit 0."""
    if limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    store = StateStore.for_workspace(g.workspace_root, g.mode)
    # Without a state there is no history; creating an empty one would only leave a file behind.
    records = store.open().runs(task_id, limit) if store.exists() else []
    if as_json:
        document = {"runs": [r.to_json() for r in records]}
        sys.stdout.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n")
        return 0
    if not records:
        which = f" of {task_id}" if task_id else ""
        print(f"no runs{which} yet (state: {store.path})")
        return 0
    width = max(len(r.task_id) for r in records)
    for record in records:
        print(line(record, width))
    return 0


def line(record: TaskRun, width: int = 0) -> str:
    """``2026-11-24 12:10:00  harness  completed   3.2s  reason``."""
    started = parse_iso(record.started_at)
    if record.finished_at:
        seconds = (parse_iso(record.finished_at) - started).total_seconds()
        duration = f"{seconds:6.1f}s"
    else:
        duration = "    ...".rjust(7)
    reason = record.reason or ""
    if record.slot:
        reason = f"{reason} [slot {record.slot}]".strip()
    text = (
        f"{started:%Y-%m-%d %H:%M:%S}  {record.task_id:<{width}}  {record.status:<18}"
        f" {duration}  {reason}"
    )
    return text.rstrip()
