"""Whether a process still runs, read from ``/proc`` (a zombie nobody reaps counts as gone)."""

from __future__ import annotations

from pathlib import Path


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs."""
    return not pid_alive(pid)
