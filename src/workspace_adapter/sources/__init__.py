"""Upstream release sources (SPEC §9): what releases exist right now, oldest first.

A source is polled as a whole: :func:`poll` returns every release it currently lists that
matches its ``tag_pattern``; deciding which ones are new is the records' job, so a poll that
fails half-way never moves anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from workspace_adapter.local.config import SourceConfig
from workspace_adapter.sources.versions import version_key

DEFAULT_TIMEOUT = 30.0


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


async def poll(source: SourceConfig, root: Path, timeout: float = DEFAULT_TIMEOUT) -> list[Release]:
    """Every release ``source`` lists now that matches its pattern, oldest first.

    Raises :class:`SourceError`; relative git URLs resolve against the workspace ``root``.
    """
    if source.kind == "git-tags":
        from workspace_adapter.sources import git_tags

        found = await git_tags.releases(source.url, root, timeout)
    else:
        from workspace_adapter.sources import feed

        found = await feed.releases(source.url, timeout)
    return order_releases(matching(found, source.tag_pattern))
