"""Ordering release tags the way a person reads them: ``v0.1.10`` after ``v0.1.9``.

Semver-ish: an optional non-digit prefix (``v``, ``release-``), dot-separated numbers, then an
optional pre-release part that sorts before the final release. Tags that are not versions sort
after all versions, in the order they were given (the sort is stable).
"""

from __future__ import annotations

import re

_VERSION = re.compile(r"^(?P<prefix>\D*?)(?P<numbers>\d+(?:\.\d+)*)(?P<rest>.*)$")
_PARTS = re.compile(r"[.\-+_]")

VersionKey = tuple[object, ...]


def version_key(tag: str) -> VersionKey:
    """A sort key: versions by number, a pre-release before its final, non-versions last."""
    match = _VERSION.match(tag)
    if match is None:
        return (1,)
    numbers = tuple(int(n) for n in match.group("numbers").split("."))
    rest = match.group("rest").lstrip("-+._")
    # A build suffix ("+build.5") does not make a pre-release, per semver.
    pre = "" if match.group("rest").startswith("+") else rest
    pre_parts = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in _PARTS.split(pre) if part
    )
    return (0, match.group("prefix").lower(), numbers, 0 if pre_parts else 1, pre_parts)
