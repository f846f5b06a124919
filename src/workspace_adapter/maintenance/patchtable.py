"""The per-patch table as people read it: one line per patch of a rebuilt series.

The entries are ``artifacts.patches`` of a run (``{name, status, files?, hunks?,
upstreamCommits?, reason?, ref?, sha?}``), as the step printed them or as a store kept them,
so every value is shown through :func:`~workspace_adapter.base.display.cell`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workspace_adapter.base.display import cell

SHOWN_COMMITS = 3


def patch_line(entry: Mapping[str, Any], width: int = 0) -> str:
    """``name  status  detail``: for a conflict its files and the upstream commits behind it."""
    name = cell(entry.get("name"))
    status = cell(entry.get("status"))
    detail: list[str] = []
    files = entry.get("files")
    if isinstance(files, list) and files:
        detail.append("in " + ", ".join(cell(f) for f in files))
    commits = [c for c in entry.get("upstreamCommits") or [] if isinstance(c, Mapping)]
    if commits:
        shown = ", ".join(
            f"{cell(c.get('sha'))[:12]} {cell(c.get('subject'))!r}" for c in commits[:SHOWN_COMMITS]
        )
        more = len(commits) - SHOWN_COMMITS
        detail.append(f"with upstream {shown}" + (f" and {more} more" if more > 0 else ""))
    if entry.get("reason"):
        detail.append(f"({cell(entry['reason'])})")
    text = f"{name:<{width}}  {status}" if width else f"{name}: {status}"
    return " ".join([text, *detail])


def patch_lines(entries: object) -> list[str]:
    """One ``patch`` line per entry of ``entries`` (anything else: no lines)."""
    if not isinstance(entries, list):
        return []
    found = [e for e in entries if isinstance(e, Mapping)]
    width = max((len(cell(e.get("name"))) for e in found), default=0)
    return [f"patch   {patch_line(e, width)}" for e in found]
