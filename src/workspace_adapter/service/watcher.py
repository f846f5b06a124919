"""The release watcher: poll due sources, record what is new, deliver and follow attempts.

A pass polls every source that is due (its interval passed, or its error backoff), records
each poll in one transaction (new releases become events and claimed attempts), redelivers the
undelivered attempts that are due, follows again the started attempts whose follower died,
then delivers the new attempts oldest first. ``workspace watch`` runs passes until SIGINT or
SIGTERM; ``--once`` runs one pass over everything, due or not (see :meth:`Watcher.run_pass`).
"""

from __future__ import annotations

import datetime as dt
import signal
import sys
from typing import Any, TextIO

import anyio
import msgspec

from workspace_adapter import sources
from workspace_adapter.base import logs
from workspace_adapter.base import status as status_rule
from workspace_adapter.base.errors import (
    EXIT_BACKEND_UNREACHABLE,
    EXIT_FAILED,
    EXIT_NEEDS_PERSON,
    EXIT_OK,
)
from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.status import Status
from workspace_adapter.base.times import iso, parse_iso, utc_now
from workspace_adapter.local.config import SourceConfig, WorkspaceConfig, duration_seconds
from workspace_adapter.service.delivery import AttemptDelivery, Clock, off_loop
from workspace_adapter.service.records import Records
from workspace_adapter.service.schema import Attempt, SeenRelease, attempt_exit_code
from workspace_adapter.sources.release import Release, SourceError

SOURCE_BACKOFF_CAP_SECONDS = 3600
FAR_FUTURE = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
"""Due-by moment that makes every undelivered attempt due (``watch --once``)."""
MAX_SLEEP_SECONDS = 60.0
MIN_SLEEP_SECONDS = 0.5
# Exit codes in the order of the status rule (failed and canceled before blocked and
# needs_intervention), with the backend gone worst of all.
_WORST_CODE_FIRST = (EXIT_BACKEND_UNREACHABLE, EXIT_FAILED, EXIT_NEEDS_PERSON, EXIT_OK)


class PassReport(msgspec.Struct, kw_only=True):
    """What one pass did, for the exit code of ``watch --once``."""

    attempts: list[Attempt] = msgspec.field(default_factory=list)
    source_failures: int = 0

    def exit_code(self) -> int:
        """The worst code of its attempts (a failed source counts as a failed attempt)."""
        codes = [attempt_exit_code(a) for a in self.attempts]
        if self.source_failures:
            codes.append(status_rule.exit_code(Status.FAILED))
        return min(codes, key=_WORST_CODE_FIRST.index, default=EXIT_OK)


def release_event(
    workspace: str, source: SourceConfig, release: Release, now: dt.datetime
) -> dict[str, Any]:
    """The FlowEvent of a release: a deterministic id, so the backend dedups it.

    The source's static payload adds keys; it cannot change which release the event is about.
    """
    payload = {
        **source.payload,
        "provider": release.provider,
        "repo": source.repo,
        "tag": release.tag,
        "url": release.url,
        "publishedAt": release.published_at,
    }
    return {
        "id": f"patch:{source.id}:{release.tag}:{source.event_type}",
        "type": source.event_type,
        "source": workspace,
        "occurredAt": release.published_at or iso(now),
        "payload": payload,
    }


def source_retry_delay(interval: int, failures: int) -> int:
    """Seconds before polling a failing source again: its interval, doubled per failure."""
    doublings = min(30, max(0, failures - 1))
    return min(max(interval, SOURCE_BACKOFF_CAP_SECONDS), interval * (1 << doublings))


class Watcher:
    """Watches the sources of one workspace and runs their maintenance attempts."""

    def __init__(
        self,
        config: WorkspaceConfig,
        records: Records,
        backend_url: str,
        *,
        out: TextIO | None = None,
        clock: Clock = utc_now,
        poll_timeout: float = sources.DEFAULT_TIMEOUT,
    ) -> None:
        self.config = config
        self.records = records
        self.clock = clock
        self.poll_timeout = poll_timeout
        self.out = out or sys.stdout
        notify_command = config.notify.command if config.notify else None
        self.delivery = AttemptDelivery(
            records,
            backend_url,
            config.root,
            notify_command=notify_command,
            out=self.out,
            clock=clock,
        )
        self.log = get_logger(component="watch")
        self._next_moments: list[str | None] | None = None

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def is_due(self, source: SourceConfig, now: dt.datetime) -> bool:
        cursor = await off_loop(self.records.cursor, source.id)
        return cursor is None or cursor.next_poll_at is None or cursor.next_poll_at <= iso(now)

    async def poll(self, source: SourceConfig, report: PassReport) -> list[Attempt]:
        """Poll one source and record the result; returns the new attempts it claimed."""
        log = self.log.bind(source_id=source.id)
        now = self.clock()
        interval = duration_seconds(source.interval)
        try:
            found = await sources.poll(source, self.config.root, self.poll_timeout)
        except Exception as exc:  # one broken source must not stop the others
            report.source_failures += 1
            why = str(exc) if isinstance(exc, SourceError) else repr(exc)
            cursor = await off_loop(self.records.cursor, source.id)
            failures = (cursor.failures if cursor else 0) + 1
            retry_at = iso(now + dt.timedelta(seconds=source_retry_delay(interval, failures)))
            await off_loop(self.records.record_failure, source.id, why, now, retry_at)
            # The line below says it on the terminal; the log keeps the trail of a surprise.
            log.info(
                "source.failed",
                error=why,
                failures=failures,
                retry_at=retry_at,
                exc_info=not isinstance(exc, SourceError),
            )
            logs.notice("source.retry", f"{source.id}: poll failed: {why}; next try at {retry_at}")
            return []
        seen = [
            SeenRelease(
                tag=r.tag,
                sha=r.sha,
                url=r.url,
                published_at=r.published_at,
                event=release_event(self.config.name, source, r, now),
            )
            for r in found
        ]
        outcome = await off_loop(
            self.records.record_poll,
            source.id,
            seen,
            prime_only=source.prime_only,
            repo=source.repo,
            now=now,
            next_poll_at=iso(now + dt.timedelta(seconds=interval)),
        )
        log.info("source.polled", releases=len(found), new=outcome.seen, primed=outcome.primed)
        if outcome.primed and source.prime_only:
            tags = [r.tag for r in found]
            shown = (
                f" ({tags[0]} … {tags[-1]})" if len(tags) > 1 else f" ({tags[0]})" if tags else ""
            )
            self.say(f"{source.id}: primed with {len(tags)} release(s){shown}; nothing dispatched")
        for attempt in outcome.claimed:
            self.say(
                f"{source.id}: new release {attempt.upstream_tag} → attempt {attempt.id} "
                f"(event {attempt.event_id})"
            )
        for tag, attempt_id in outcome.linked:
            self.say(f"{source.id}: release {tag} already has attempt {attempt_id}; linked")
        if not outcome.seen:
            self.say(f"{source.id}: no new release")
        return outcome.claimed

    async def run_pass(self, *, everything: bool = False) -> PassReport:
        """Poll what is due, then deliver and follow; see the module docstring.

        ``everything`` is the operator's "check now" (``watch --once``): every source is polled
        and every undelivered attempt redelivered, whatever their interval or backoff.
        """
        report = PassReport()
        self._next_moments = None
        fresh: list[Attempt] = []
        now = self.clock()
        for source in self.config.sources:
            if everything or await self.is_due(source, now):
                fresh.extend(await self.poll(source, report))
        due_by = FAR_FUTURE if everything else self.clock()
        for orphan in await off_loop(self.records.claim, Status.STARTED, self.clock()):
            self.say(f"attempt {orphan.id} {orphan.upstream_tag}: following its runs again")
            report.attempts.append(await self.delivery.follow_again(orphan))
        for attempt in await off_loop(self.records.claim, Status.UNDELIVERED, due_by):
            self.say(f"attempt {attempt.id} {attempt.upstream_tag}: redelivering")
            report.attempts.append(await self.delivery.deliver(attempt))
        for attempt in fresh:
            report.attempts.append(await self.delivery.deliver(attempt))
        self._next_moments = await off_loop(self._pending_moments)
        return report

    async def run_once(self) -> int:
        """One pass over everything; the exit code of its worst outcome (docs/statuses.md)."""
        report = await self.run_pass(everything=True)
        code = report.exit_code()
        if code == EXIT_BACKEND_UNREACHABLE:
            logs.notice(
                "backend.unreachable",
                f"error: backend not reachable at {self.delivery.backend_url}; start it with "
                "`workspace backend` (`workspace watch` delivers what is waiting)",
            )
        return code

    def _pending_moments(self) -> list[str | None]:
        """When the next undelivered attempt and each source are due."""
        moments = [self.records.next_delivery()]
        for source in self.config.sources:
            cursor = self.records.cursor(source.id)
            moments.append(cursor.next_poll_at if cursor else None)
        return moments

    def seconds_to_next_pass(self) -> float:
        """How long to sleep after a pass (what the pass left due, read off the loop)."""
        now = self.clock()
        moments = self._next_moments
        if moments is None:
            moments = self._pending_moments()
        waits = [(parse_iso(m) - now).total_seconds() for m in moments if m is not None]
        wait = min([MAX_SLEEP_SECONDS, *waits])
        return max(MIN_SLEEP_SECONDS, wait)

    async def run_forever(self) -> int:
        """Passes until SIGINT or SIGTERM; an attempt cut short is followed by the next watch."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as group:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        self.log.info("watch.stopping", signal=signal.Signals(signum).name)
                        group.cancel_scope.cancel()
                        return

                group.start_soon(stop_on_signal)
                while True:
                    await self.run_pass()
                    await anyio.sleep(self.seconds_to_next_pass())
        return 0
