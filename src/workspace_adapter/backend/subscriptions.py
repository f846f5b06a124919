"""Who hears what: subscriptions to runs and events, and each client's bounded outbox.

Publishing never waits: a notification is encoded once and appended to the outbox of every
matching connection. An outbox that grows past its byte limit (a client that does not read)
marks itself overflowed and drops what it held, so one slow client cannot grow the daemon's
memory or slow the others; its connection is then closed with 1008. A reply to the client's
own request waits for room instead: one large answer (a ``flow.listRuns`` of runs with long
output tails) is not a sign of a client that stopped reading.

A run's output is paced the other way round: its step writes to files and never waits, and
the backend reads those files no faster than the connections that hear the run take the
lines (:meth:`SubscriptionHub.room_for_output`). So a client that reads, however large the
burst, is not closed; one that stops reading for :data:`OUTPUT_PATIENCE_SECONDS` is.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable

from workspace_adapter.protocol import (
    RUN_OUTPUT,
    RUN_UPDATED,
    RunOutput,
    RunUpdated,
    WireRun,
    encode_notification,
)

OUTBOX_LIMIT_BYTES = 1024 * 1024
# How long a run's output waits for a connection that hears it to take what it has queued.
OUTPUT_PATIENCE_SECONDS = 5.0
# Subscriptions one connection may hold; a client subscribing in a loop cannot grow the daemon.
MAX_SUBSCRIPTIONS_PER_CONNECTION = 1024


class TooManySubscriptions(Exception):
    """A connection asked for more than :data:`MAX_SUBSCRIPTIONS_PER_CONNECTION`."""


class Outbox:
    """Frames waiting to be written to one WebSocket, at most ``limit`` bytes of them."""

    def __init__(
        self, limit: int = OUTBOX_LIMIT_BYTES, on_overflow: Callable[[], None] | None = None
    ) -> None:
        self.limit = limit
        self.on_overflow = on_overflow
        self.size = 0
        self.overflowed = False
        self.closed = False
        self._frames: deque[bytes] = deque()
        # asyncio's events, cleared and reused: an anyio.Event per frame cost more than the
        # rest of the outbox (the daemon runs on asyncio only).
        self._ready = asyncio.Event()
        self._room = asyncio.Event()

    async def put_reply(self, frame: bytes) -> None:
        """Queue a reply once it fits (or the outbox is empty); dropped if the outbox closed.

        The waiting is bounded: a connection has at most so many requests in flight.
        """
        while not self.closed and self.size and self.size + len(frame) > self.limit:
            self._room.clear()
            await self._room.wait()
        self.put(frame)

    def put(self, frame: bytes) -> None:
        """Queue ``frame``; past the limit the outbox overflows and stops taking frames.

        An empty outbox takes any one frame, so memory stays under ``limit`` plus one frame.
        """
        if self.closed:
            return
        if self.size and self.size + len(frame) > self.limit:
            self.give_up()
            return
        self._frames.append(frame)
        self.size += len(frame)
        self._ready.set()

    def give_up(self) -> None:
        """Drop a connection that does not read (its socket is then closed with 1008)."""
        self.overflowed = True
        self.close()
        if self.on_overflow is not None:
            self.on_overflow()

    async def wait_below(self, size: int) -> None:
        """Return once at most ``size`` bytes wait here, or the outbox is closed."""
        while not self.closed and self.size > size:
            self._room.clear()
            await self._room.wait()

    def close(self) -> None:
        self.closed = True
        self._frames.clear()
        self.size = 0
        self._ready.set()
        self._room.set()

    async def get(self) -> bytes | None:
        """The next frame, or None once the outbox is closed."""
        while not self._frames:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        self.size -= len(frame)
        # Wake the replies waiting for room; each checks again whether it fits now.
        self._room.set()
        return frame


class Subscription:
    __slots__ = ("event_id", "id", "outbox", "run_id")

    def __init__(self, sub_id: str, outbox: Outbox, event_id: str | None, run_id: str | None):
        self.id = sub_id
        self.outbox = outbox
        self.event_id = event_id
        self.run_id = run_id


class SubscriptionHub:
    """Routes ``flow.run.updated`` and ``flow.run.output`` to the connections that asked."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._subs: dict[str, Subscription] = {}
        self._everything: dict[str, Subscription] = {}
        self._by_event: dict[str, dict[str, Subscription]] = {}
        self._by_run: dict[str, dict[str, Subscription]] = {}
        self._of: dict[Outbox, dict[str, Subscription]] = {}
        # Every open connection, subscribed or not: broadcasts (the app-server's) reach them all.
        self._connected: dict[Outbox, None] = {}

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self, outbox: Outbox, event_id: str | None, run_id: str | None) -> str:
        mine = self._of.setdefault(outbox, {})
        if len(mine) >= MAX_SUBSCRIPTIONS_PER_CONNECTION:
            raise TooManySubscriptions
        sub = Subscription(f"sub_{next(self._ids)}", outbox, event_id, run_id)
        self._subs[sub.id] = sub
        mine[sub.id] = sub
        if run_id is not None:
            self._by_run.setdefault(run_id, {})[sub.id] = sub
        elif event_id is not None:
            self._by_event.setdefault(event_id, {})[sub.id] = sub
        else:
            self._everything[sub.id] = sub
        return sub.id

    def unsubscribe(self, sub_id: str) -> bool:
        sub = self._subs.pop(sub_id, None)
        if sub is None:
            return False
        self._everything.pop(sub_id, None)
        mine = self._of.get(sub.outbox)
        if mine is not None:
            mine.pop(sub_id, None)
            if not mine:
                del self._of[sub.outbox]
        for index, key in ((self._by_run, sub.run_id), (self._by_event, sub.event_id)):
            if key is not None and key in index:
                index[key].pop(sub_id, None)
                if not index[key]:
                    del index[key]
        return True

    def subscriptions_of(self, outbox: Outbox) -> list[Subscription]:
        return list(self._of.get(outbox, {}).values())

    def attach(self, outbox: Outbox) -> None:
        """A connection opened: it hears every broadcast until :meth:`drop`."""
        self._connected[outbox] = None

    def drop(self, outbox: Outbox) -> None:
        """Forget a connection that went away, and every subscription it had."""
        self._connected.pop(outbox, None)
        for sub in self.subscriptions_of(outbox):
            self.unsubscribe(sub.id)

    def broadcast(self, frame: bytes) -> None:
        """Queue ``frame`` for every open connection (a slow one overflows, as for runs)."""
        self._publish(list(self._connected), frame)

    @property
    def connections(self) -> int:
        return len(self._connected)

    def _targets(self, event_id: str, run_id: str) -> list[Outbox]:
        seen: dict[int, Outbox] = {}
        for group in (
            self._everything,
            self._by_event.get(event_id, {}),
            self._by_run.get(run_id, {}),
        ):
            for sub in group.values():
                # A connection with several matching subscriptions hears a thing once.
                seen.setdefault(id(sub.outbox), sub.outbox)
        return list(seen.values())

    def _publish(self, targets: list[Outbox], frame: bytes) -> None:
        for outbox in targets:
            outbox.put(frame)

    def run_updated(self, run: WireRun) -> None:
        targets = self._targets(run.eventId, run.id)
        if targets:
            self._publish(targets, encode_notification(RUN_UPDATED, RunUpdated(run)))

    async def room_for_output(
        self, event_id: str, run_id: str, patience: float = OUTPUT_PATIENCE_SECONDS
    ) -> None:
        """Return once every connection that hears this run has room for more of its output.

        Room means the outbox is at most a quarter full, so the next piece of output (see the
        runner's paced reads) fits. A connection that has not made room within ``patience``
        seconds is given up, as one that overflows.
        """
        for outbox in self._targets(event_id, run_id):
            low = outbox.limit // 4
            if outbox.size <= low:
                continue
            try:
                await asyncio.wait_for(outbox.wait_below(low), patience)
            except TimeoutError:
                outbox.give_up()

    def run_output(self, event_id: str, run_id: str, stream: str, line: str) -> None:
        targets = self._targets(event_id, run_id)
        if targets:
            frame = encode_notification(RUN_OUTPUT, RunOutput(run_id, stream, line))
            self._publish(targets, frame)
