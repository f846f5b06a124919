"""Upstream release sources: what releases exist right now, oldest first.

A source is polled as a whole: :func:`poll` returns every release it currently lists that
matches its ``tag_pattern``; deciding which ones are new is the records' job, so a poll that
fails half-way never moves anything.
"""

from __future__ import annotations

from pathlib import Path

from workspace_adapter.local.config import SourceConfig
from workspace_adapter.sources.release import Release, matching, order_releases

DEFAULT_TIMEOUT = 30.0


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
