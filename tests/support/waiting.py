"""Waiting for a condition nothing announces: check it again and again, up to a deadline.

Wait on the event itself when there is one (a line on a pipe, a notification, ``Popen.wait``).
This is for what has none: a process that is not our child going away, a row a daemon writes,
a status only a request can read. The deadline is generous; it only turns a hang into a message.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import anyio

T = TypeVar("T")

POLL_SECONDS = 0.05
DEADLINE_SECONDS = 30.0


def wait_until(check: Callable[[], T | None], what: str, within: float = DEADLINE_SECONDS) -> T:
    """Call ``check`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + within
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        time.sleep(POLL_SECONDS)
    return found


@overload
async def until(check: Callable[[], Awaitable[T | None]], what: str, within: float = ...) -> T: ...
@overload
async def until(check: Callable[[], T | None], what: str, within: float = ...) -> T: ...
async def until(check: Callable[[], Any], what: str, within: float = DEADLINE_SECONDS) -> Any:
    """:func:`wait_until` for async tests; ``check`` may be a coroutine function."""
    deadline = time.monotonic() + within
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        await anyio.sleep(POLL_SECONDS)
