"""How every stored and sent time is written and read: UTC ISO-8601, milliseconds, ``Z``."""

from __future__ import annotations

import datetime as dt


def utc_now() -> dt.datetime:
    """The current moment, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """UTC ISO-8601 with milliseconds and ``Z``, the format of every stored time."""
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def utc_now_iso() -> str:
    """The current moment as :func:`iso` writes it."""
    return iso(utc_now())


def parse_iso(text: str) -> dt.datetime:
    """The moment an ISO-8601 string names; a trailing ``Z`` is UTC."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
