"""``workspace attempts``: list maintenance attempts, retry or replay one.

``--json`` prints one document on stdout: ``{"attempts": [attempt, …]}`` (newest first, like
``runs``), or the new attempt for ``retry`` / ``replay``. An attempt::

    {"id": "att_20261124T230755_1ba8de9a", "eventId": "patch:upstream:v0.1.4:upstream.release",
     "operation": "dispatch", "status": "changed", "upstreamRepo": "peezy-tech/patch-moi-harness",
     "upstreamTag": "v0.1.4", "runIds": ["run_a9b7ce48f67a"],
     "runStatuses": {"run_a9b7ce48f67a": "changed"}, "candidateRefs": [...], "message": "...",
     "retryOf": null, "deliveries": 1, "nextDeliveryAt": null,
     "createdAt": "...", "updatedAt": "..."}

``retry`` opens a new ``retry`` attempt: it replays the event when the backend knows it
(``flow.replay``), else dispatches the stored event. ``replay`` opens a ``replay`` attempt that
only replays. Exit codes follow the new attempt's status (docs/statuses.md); 4 when the backend was
not reachable (``service.schema.attempt_exit_code``, as ``watch --once`` counts them).

An attempt whose runs rebuilt a patch series lists its patches under its line, one per line
(name, status, and for a conflict its files and the upstream commits behind it), from the
attempt's ``patches`` (the runs' ``artifacts.patches``) when the records keep them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import msgspec

from workspace_adapter.base import status as status_rule
from workspace_adapter.base.display import cell
from workspace_adapter.base.errors import EXIT_BACKEND_UNREACHABLE, EXIT_BAD_INPUT, UserError
from workspace_adapter.local import configfile
from workspace_adapter.maintenance.patchtable import patch_lines

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals
    from workspace_adapter.service.records import Records
    from workspace_adapter.service.schema import Attempt, Operation


def _records(g: Globals) -> Records:
    from workspace_adapter.service.records import Records

    return Records.for_workspace(g.workspace_root).open()


def summary(attempt: Attempt) -> str:
    """One line: id, status, release, operation, when, and why."""
    why = f"  {cell(attempt.message)}" if attempt.message else ""
    release = f"{cell(attempt.upstream_repo)}@{cell(attempt.upstream_tag)}"
    return (
        f"{cell(attempt.id)}  {cell(attempt.status):<18} {release}  {attempt.operation}  "
        f"{cell(attempt.updated_at)}{why}"
    )


def table(attempt: Attempt) -> list[str]:
    """The attempt's line, then one line per patch of a rebuilt patch series."""
    patches = getattr(attempt, "patches", None)  # records that keep the runs' patch tables
    return [summary(attempt), *(f"  {line}" for line in patch_lines(patches))]


def list_attempts(g: Globals, status: str | None, as_json: bool) -> int:
    if status is not None and status not in status_rule.ATTEMPT_STATUSES:
        raise UserError(
            f"--status: {status!r} is not an attempt status; use one of "
            f"{', '.join(status_rule.ATTEMPT_STATUSES)}",
            EXIT_BAD_INPUT,
        )
    found = _records(g).attempts(status)
    if as_json:
        sys.stdout.write(msgspec.json.encode({"attempts": found}).decode() + "\n")
        return 0
    if not found:
        print("no attempts" + (f" with status {status}" if status else ""))
    for attempt in found:
        print("\n".join(table(attempt)))
    return 0


def _again(g: Globals, attempt_id: str, operation: Operation, as_json: bool) -> int:
    import anyio

    from workspace_adapter.base import logs
    from workspace_adapter.base.times import utc_now
    from workspace_adapter.service.delivery import AttemptDelivery
    from workspace_adapter.service.schema import attempt_exit_code

    logs.configure(g.log_level)
    records = _records(g)
    original = records.attempt(attempt_id)
    if original is None:
        raise UserError(
            f"no attempt {attempt_id!r}; `workspace attempts` lists them", EXIT_BAD_INPUT
        )
    notify_command = None
    if configfile.config_path(g.workspace_root) is not None:
        config = configfile.load(g.workspace_root)
        notify_command = config.notify.command if config.notify else None
    attempt = records.new_attempt(operation, original, utc_now())
    delivery = AttemptDelivery(
        records,
        g.backend_url,
        g.workspace_root,
        notify_command=notify_command,
        out=sys.stderr if as_json else sys.stdout,
    )
    if not as_json:
        print(f"attempt {attempt.id}: {operation} of {original.id} ({cell(original.event_id)})")
    done = anyio.run(delivery.deliver, attempt)
    if as_json:
        sys.stdout.write(msgspec.json.encode(done).decode() + "\n")
    else:
        for line in table(done)[1:]:
            print(line)
    code = attempt_exit_code(done)
    if done.status == status_rule.Status.UNDELIVERED and code == EXIT_BACKEND_UNREACHABLE:
        print(
            f"error: backend not reachable at {g.backend_url}; start it with "
            "`workspace backend` (the attempt is redelivered by `workspace watch`)",
            file=sys.stderr,
        )
    return code


def retry(g: Globals, attempt_id: str, as_json: bool) -> int:
    return _again(g, attempt_id, "retry", as_json)


def replay(g: Globals, attempt_id: str, as_json: bool) -> int:
    return _again(g, attempt_id, "replay", as_json)
