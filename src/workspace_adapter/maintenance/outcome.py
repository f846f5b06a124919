"""How a maintenance run ends early: a flow status and a one-line reason."""

from __future__ import annotations

from pathlib import Path

from workspace_adapter.base.errors import write_crash_log
from workspace_adapter.base.status import Status


class Outcome(Exception):
    """Ends a run early with a flow status and a one-line reason."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status: Status = status
        self.message = message


def short(sha: str | None) -> str:
    """A sha as operators read it in one-line messages."""
    return sha[:12] if sha else "none"


def one_line(text: str) -> str:
    return " ".join(text.split())


def log_traceback(root: Path, exc: BaseException) -> str:
    """Write ``exc``'s traceback under ``root/.workspace/logs/``; the clause naming the file.

    A step's stderr reaches the operator's terminal and the run record, so an unexpected error
    shows there as one line, and the trail is kept in a file.
    """
    return write_crash_log(root, exc, "step-crash")
