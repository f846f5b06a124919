"""Is the process that stored a run still running? (pid + a marker against pid reuse)."""

from __future__ import annotations

import os
from pathlib import Path


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_marker(pid: int) -> str:
    """Something that changes when ``pid`` is reused: boot id + start time (Linux), else ""."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name may hold spaces and parentheses; fields are counted after the last ")".
    fields = stat.rsplit(")", 1)[-1].split()
    return f"{_boot_id()}:{fields[19]}" if len(fields) > 19 else ""


def process_alive(pid: int | None, marker: str | None) -> bool:
    """Whether the process that recorded a run is still the one running under ``pid``."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    if stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]:
        return False
    return not marker or process_marker(pid) == marker
