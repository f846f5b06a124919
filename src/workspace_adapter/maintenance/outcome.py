"""How a maintenance run ends early: a flow status and a one-line reason."""

from __future__ import annotations

from workspace_adapter.events import FlowStatus


class Outcome(Exception):
    """Ends a run early with a flow status and a one-line reason."""

    def __init__(self, status: FlowStatus, message: str) -> None:
        super().__init__(message)
        self.status: FlowStatus = status
        self.message = message


def short(sha: str | None) -> str:
    """A sha as operators read it in one-line messages."""
    return sha[:12] if sha else "none"


def one_line(text: str) -> str:
    return " ".join(text.split())
