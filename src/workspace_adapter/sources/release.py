"""A release as a source lists it, and the order and filter every source applies."""

from __future__ import annotations

import re

import msgspec

from workspace_adapter.sources.versions import version_key


class Release(msgspec.Struct, kw_only=True, frozen=True):
    """One release a source lists: its tag and what the release event's payload carries."""

    tag: str
    provider: str
    url: str | None = None
    published_at: str | None = None
    sha: str | None = None


class SourceError(Exception):
    """A source could not be read; the message says what failed and what to check."""


def order_releases(releases: list[Release]) -> list[Release]:
    """Oldest first by version; non-versions after, in the given order; one per tag."""
    unique: dict[str, Release] = {}
    for release in releases:
        unique.setdefault(release.tag, release)
    return sorted(unique.values(), key=lambda r: version_key(r.tag))


def matching(releases: list[Release], tag_pattern: str | None) -> list[Release]:
    if not tag_pattern:
        return releases
    pattern = re.compile(tag_pattern)
    return [r for r in releases if pattern.fullmatch(r.tag)]
