"""What a tick should do, decided without I/O.

:func:`plan_tick` takes the config, each task's slot state and the clock, and returns one
:class:`Decision` per scheduled task; ``workspace tick`` carries the decisions out. Cron is
evaluated by cronsim in the workspace's time zone, imported only when a task has a schedule
(a tick over unscheduled tasks loads the standard library alone). A task whose cached
``next_slot`` is still in the future is decided with one string comparison, which keeps a tick
over a thousand idle tasks cheap.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

from workspace_adapter.base.times import iso, parse_iso
from workspace_adapter.local.config import MAX_CATCHUP_SLOTS, TaskConfig, WorkspaceConfig
from workspace_adapter.local.taskruns import SlotState

Action = Literal["run", "overlap", "skip", "baseline", "idle", "disabled"]


class Decision(NamedTuple):
    """What tick does with one scheduled task, and why.

    ``run``: run once per slot in ``slots`` (oldest first). ``overlap``: due, but a run is
    still going; the newest slot is recorded as skipped. ``skip``: due with ``catchup =
    "none"``; the newest slot is recorded as skipped. ``baseline``: first sight of the task;
    ``slot_state`` is recorded and nothing runs. ``idle``: no slot since the last one.
    ``disabled``: ``enabled = false``.
    """

    task: TaskConfig
    action: Action
    reason: str
    last_slot: str | None = None
    slots: Sequence[str] = ()
    next_slot: dt.datetime | None = None
    # The slot state after this decision; for ``idle`` only set when the cache was refreshed.
    slot_state: SlotState | None = None

    @property
    def due(self) -> bool:
        return self.action in ("run", "overlap", "skip")


def _next_after(expr: str, moment: dt.datetime) -> dt.datetime | None:
    from cronsim import CronSim

    try:
        return next(CronSim(expr, moment))
    except StopIteration:  # cronsim gives up on expressions with no slot for 50 years
        return None


def slots_since(
    expr: str, after: dt.datetime | None, now: dt.datetime, limit: int
) -> tuple[list[dt.datetime], bool]:
    """The newest ``limit`` slots in (``after``, ``now``], oldest first, and whether more passed.

    Walks backwards from ``now``, so a task idle for a year costs ``limit`` steps, not one per
    missed slot.
    """
    from cronsim import CronSim

    # cronsim's reverse iteration starts one second before its start time. The second is added
    # in UTC: wall-clock arithmetic drops ``fold``, which in a DST fall-back hour would move
    # the start an hour back.
    zone = now.tzinfo
    start = (now.astimezone(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)).astimezone(
        zone
    )
    walker = CronSim(expr, start, reverse=True)
    # Compared as instants: datetimes sharing a tzinfo compare by wall clock, ignoring fold, so
    # 02:10 CET (after the clocks went back) would look older than 02:55 CEST.
    after_ts = after.timestamp() if after is not None else None
    found: list[dt.datetime] = []
    try:
        for slot in walker:
            if after_ts is not None and slot.timestamp() <= after_ts:
                return found[::-1], False
            if len(found) == limit:
                return found[::-1], True
            found.append(slot)
            if after is None:
                return found, False
    except StopIteration:
        pass
    return found[::-1], False


def zone_of(config: WorkspaceConfig) -> dt.tzinfo:
    """The workspace's time zone (``timezone`` in workspace.toml), in which cron is read."""
    if config.timezone == "UTC":
        return dt.UTC
    # Only a workspace in another zone pays for reading the zone database.
    import zoneinfo

    return zoneinfo.ZoneInfo(config.timezone)


def local_time(moment: dt.datetime) -> str:
    """A slot as people read it: minutes, in the zone ``moment`` carries."""
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def plan_task(
    task: TaskConfig,
    state: SlotState | None,
    running: bool,
    now: dt.datetime,
    zone: dt.tzinfo,
    tz_name: str,
) -> Decision:
    """The decision for one scheduled task at ``now`` (an aware datetime)."""
    expr = task.schedule
    assert expr is not None
    local_now = now.astimezone(zone)
    if not task.enabled:
        return Decision(task=task, action="disabled", reason="disabled (enabled = false)")
    if state is None:
        latest, _ = slots_since(expr, None, local_now, 1)
        baseline = iso(latest[0]) if latest else iso(now)
        upcoming = _next_after(expr, local_now)
        return Decision(
            task=task,
            action="baseline",
            reason=f"first tick for this task: baseline {local_time((latest or [local_now])[0])} "
            "recorded, nothing runs until the next slot",
            next_slot=upcoming,
            slot_state=SlotState(
                last_slot=baseline,
                next_slot=iso(upcoming) if upcoming else None,
                schedule=expr,
                timezone=tz_name,
            ),
        )
    last = parse_iso(state.last_slot).astimezone(zone)
    cached = state.next_slot if (state.schedule, state.timezone) == (expr, tz_name) else None
    refreshed: SlotState | None = None
    if cached is None:
        upcoming = _next_after(expr, last)
        cached = iso(upcoming) if upcoming else None
        refreshed = SlotState(
            last_slot=state.last_slot, next_slot=cached, schedule=expr, timezone=tz_name
        )
    if cached is None or cached > iso(now):
        upcoming_at = parse_iso(cached).astimezone(zone) if cached else None
        return Decision(
            task=task,
            action="idle",
            reason=f"no slot since the last one ({local_time(last)})",
            last_slot=state.last_slot,
            next_slot=upcoming_at,
            slot_state=refreshed,
        )
    slots, more = slots_since(expr, last, local_now, MAX_CATCHUP_SLOTS)
    upcoming = _next_after(expr, local_now)
    if not slots:
        # The cache said due but no slot lies in (last, now]: trust the walk, refresh the cache.
        return Decision(
            task=task,
            action="idle",
            reason=f"no slot since the last one ({local_time(last)})",
            last_slot=state.last_slot,
            next_slot=upcoming,
            slot_state=SlotState(
                last_slot=state.last_slot,
                next_slot=iso(upcoming) if upcoming else None,
                schedule=expr,
                timezone=tz_name,
            ),
        )
    missed = f"{len(slots)}{'+' if more else ''} slot(s) since {local_time(last)}"
    newest = slots[-1]
    after = SlotState(
        last_slot=iso(newest),
        next_slot=iso(upcoming) if upcoming else None,
        schedule=expr,
        timezone=tz_name,
    )
    common = {
        "task": task,
        "last_slot": state.last_slot,
        "next_slot": upcoming,
        "slot_state": after,
    }
    if running:
        return Decision(
            action="overlap",
            reason=f"{missed}, but the previous run is still going: skipped (overlap)",
            slots=[iso(newest)],
            **common,  # type: ignore[arg-type]
        )
    if task.catchup == "none":
        return Decision(
            action="skip",
            reason=f"{missed}; catchup none: skipped, not run",
            slots=[iso(newest)],
            **common,  # type: ignore[arg-type]
        )
    if task.catchup == "latest":
        return Decision(
            action="run",
            reason=f"{missed}; catchup latest: runs once for {local_time(newest)}",
            slots=[iso(newest)],
            **common,  # type: ignore[arg-type]
        )
    dropped = f" (older ones dropped: at most {MAX_CATCHUP_SLOTS})" if more else ""
    return Decision(
        action="run",
        reason=f"{missed}; catchup all: runs for each{dropped}",
        slots=[iso(s) for s in slots],
        **common,  # type: ignore[arg-type]
    )


def plan_tick(
    config: WorkspaceConfig,
    states: Mapping[str, SlotState],
    running: set[str],
    now: dt.datetime,
) -> list[Decision]:
    """One decision per task that has a schedule; tasks without one are never run by tick."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    zone = zone_of(config)
    return [
        plan_task(task, states.get(task.id), task.id in running, now, zone, config.timezone)
        for task in config.tasks
        if task.schedule is not None
    ]
