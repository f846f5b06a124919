"""How a flow result reads on a terminal: shared by ``flow run`` and flow tasks of ``run``."""

from __future__ import annotations

import os
from typing import Any, TextIO

from workspace_adapter.base.status import Status
from workspace_adapter.maintenance.patchtable import patch_lines

# Green when nothing is asked of anyone, yellow when a person looks, red when it went wrong.
_COLOURS: dict[str, str] = {
    Status.COMPLETED: "32",
    Status.CHANGED: "32",
    Status.SKIPPED: "33",
    Status.BLOCKED: "33",
    Status.NEEDS_INTERVENTION: "33",
    Status.FAILED: "31",
    Status.CANCELED: "31",
}


def artifact_lines(artifacts: dict[str, Any]) -> list[str]:
    """The lines that sum up a maintenance result: tag, shas, checks, candidate refs, and one
    line per patch of a rebuilt patch series."""
    lines: list[str] = []
    if artifacts.get("releaseTag"):
        lines.append(f"tag     {artifacts['releaseTag']}")
    before, after = artifacts.get("beforeSha"), artifacts.get("afterSha")
    if before or after:
        arrow = "(unchanged)" if before == after else f"→ {short_sha(after)}"
        lines.append(f"sha     {short_sha(before)} {arrow}")
    for check in artifacts.get("checks") or []:
        if isinstance(check, dict):
            secs = check.get("seconds")
            took = f"  {secs:.1f}s" if isinstance(secs, int | float) else ""
            lines.append(f"check   {check.get('name')}: {check.get('status')}{took}")
    for ref in artifacts.get("candidateRefs") or []:
        if isinstance(ref, dict):
            pushed = "pushed" if ref.get("pushed") else "not pushed"
            lines.append(
                f"ref     {ref.get('remote')} {ref.get('ref')} "
                f"{short_sha(ref.get('sha'))} ({pushed})"
            )
    lines += patch_lines(artifacts.get("patches"))
    return lines


def short_sha(sha: object) -> str:
    return str(sha)[:7] if sha else "-"


def paint(status: str, stream: TextIO) -> str:
    """``status`` in its colour on a terminal, unless ``NO_COLOR`` is set to a non-empty value
    (https://no-color.org: an empty one asks for nothing); plain otherwise."""
    colour = _COLOURS.get(status)
    if colour and stream.isatty() and not os.environ.get("NO_COLOR"):
        return f"\033[{colour}m{status}\033[0m"
    return status
