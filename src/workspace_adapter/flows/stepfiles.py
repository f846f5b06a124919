"""A step run's folder: its context, its output files and its exit status, outside the backend.

A step writes its stdout and stderr straight into files of its run's folder (opened for
append), not into pipes of the process that started it, so it does not depend on that process
staying alive. A small ``sh`` wrapper is the step's parent and writes the step's exit code to
``exit`` when it ends; ``step.json`` holds the wrapper's pid and start marker. A backend that
dies and restarts finds each step it left either still running (it follows the files again
and waits) or ended (it reads the exit code and the FLOW_RESULT line from the files).

The files stay bounded on disk while someone follows them: what the reader has passed, except
the last :data:`KEEP_BYTES`, is punched out (``fallocate(FALLOC_FL_PUNCH_HOLE)``; the file keeps
its size but not its blocks). Before a punch would drop the last FLOW_RESULT line read so far,
that line is saved to ``result``.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import functools
import os
import re
import shutil
from pathlib import Path
from typing import Any

import msgspec

from workspace_adapter.base.libc import libc_function
from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.processes import cmdline, process_marker
from workspace_adapter.base.tails import TAIL_BYTES
from workspace_adapter.base.times import iso
from workspace_adapter.flows.output import MAX_LINE_BYTES, StreamCapture

SH = "/bin/sh"
# "$0" is the run's folder, "$@" the step's argv. The wrapper writes its own pid first (so a
# backend that dies before it noted the pid still finds the step), then the step's exit code.
# It re-raises the signal that killed the step (for the signals that end a process), so its
# own parent still sees "killed by SIGx".
WRAPPER = (
    'echo $$ > "$0/pid"; "$@"; c=$?; echo "$c" > "$0/exit"; '
    "case $c in 129|130|131|132|134|135|136|137|138|139|140|141|142|143) "
    "kill -$((c - 128)) $$;; esac; "
    'exit "$c"'
)
READ_CHUNK = 64 * 1024
READ_BUDGET = 1024 * 1024
"""How much one look at a file reads before it lets the event loop run others."""
PACED_READ = 2 * 1024
"""How much one look reads when someone streams the lines: 2 KiB of empty lines make about
240 KB of notifications (a frame is about 120 bytes), which fit beside the quarter of an
outbox a subscriber may still hold when it is asked for more."""
KEEP_BYTES = TAIL_BYTES + MAX_LINE_BYTES
"""What stays on disk behind the reader: enough for a tail and a FLOW_RESULT line."""
PUNCH_STEP = 4 * 1024 * 1024
"""Punch only once this much more could go: one system call per 4 MiB of output."""
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


class StepRecord(msgspec.Struct, kw_only=True):
    """``step.json``: which process runs the step, and since when."""

    pid: int
    marker: str
    startedAt: str


class RunFiles:
    """The files of one run's folder (see the module docstring)."""

    __slots__ = ("context", "exit", "folder", "pid", "result", "stderr", "stdout", "step")

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.context = folder / "context.json"
        self.stdout = folder / "stdout"
        self.stderr = folder / "stderr"
        self.exit = folder / "exit"
        self.pid = folder / "pid"
        self.step = folder / "step.json"
        self.result = folder / "result"

    @classmethod
    def of_run(cls, runs_dir: Path, run_id: str) -> RunFiles:
        """The folder of ``run_id`` under ``runs_dir`` (ids we generate are already safe names)."""
        if _SAFE_NAME.fullmatch(run_id) and run_id not in (".", ".."):
            return cls(runs_dir / run_id)
        import hashlib

        return cls(runs_dir / ("h-" + hashlib.sha256(run_id.encode()).hexdigest()[:40]))

    def prepare(self, context: bytes) -> None:
        """A fresh folder holding the step's context (what a previous attempt left is gone)."""
        if self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.context.write_bytes(context)

    def open_output(self, path: Path) -> int:
        """A write-only, append-only descriptor for the step's stdout or stderr."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def started(self, record: StepRecord) -> None:
        self.step.write_bytes(msgspec.json.encode(record))

    def step_record(self) -> StepRecord | None:
        """Who runs the step: ``step.json``, or else the pid its wrapper wrote (the process
        that started it died before it noted it); None when no step was started here."""
        try:
            return msgspec.json.decode(self.step.read_bytes(), type=StepRecord)
        except (OSError, msgspec.DecodeError):
            pass
        try:
            pid = int(self.pid.read_text().strip())
            since = self.context.stat().st_mtime
        except (OSError, ValueError):
            return None
        marker = process_marker(pid) if self.is_wrapper(pid) else "gone"
        started = dt.datetime.fromtimestamp(since, dt.UTC)
        return StepRecord(pid=pid, marker=marker, startedAt=iso(started))

    def is_wrapper(self, pid: int) -> bool:
        """Whether ``pid`` is this folder's wrapper (its command line names the folder)."""
        argv = cmdline(pid) or []
        return len(argv) > 3 and argv[1] == "-c" and argv[3] == os.fspath(self.folder)

    def exit_code(self) -> int | None:
        """The step's exit code as its wrapper wrote it; None while it runs (or if it was
        killed together with its wrapper)."""
        try:
            return int(self.exit.read_text().strip())
        except (OSError, ValueError):
            return None

    def saved_result(self) -> bytes | None:
        try:
            return self.result.read_bytes() or None
        except OSError:
            return None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@functools.cache
def _fallocate() -> Any:
    fallocate = libc_function("fallocate")
    if fallocate is not None:
        fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
        fallocate.restype = ctypes.c_int
    return fallocate


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free the blocks of ``[offset, offset + length)``; False where the file system cannot."""
    fallocate = _fallocate()
    if fallocate is None or length <= 0:
        return False
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    return bool(fallocate(fd, mode, offset, length) == 0)


def first_data(fd: int) -> int:
    """Where the file's data starts, after any punched-out head (0 when unknown).

    The size is read before looking for data: a file with nothing but holes (or nothing at
    all) starts at the end it had then, so bytes the step appends meanwhile are not skipped.
    """
    try:
        size = os.fstat(fd).st_size
    except OSError:
        return 0
    try:
        return min(os.lseek(fd, 0, os.SEEK_DATA), size)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no data before the end: all holes, or empty
            return size
        return 0  # SEEK_DATA not supported here: read from the start


class FileFollower:
    """Feeds what a step appended to one output file since the last look into a capture."""

    __slots__ = ("_fd", "_files", "_punch_ok", "_punched", "capture", "offset", "path")

    def __init__(self, path: Path, capture: StreamCapture, files: RunFiles) -> None:
        self.path = path
        self.capture = capture
        self._files = files
        self._fd: int | None = None
        self.offset = 0
        self._punched = 0
        self._punch_ok = True

    def _open(self) -> int | None:
        if self._fd is None:
            try:
                # Read-write only so the passed part can be punched out; nothing is written.
                self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            # A folder left by an earlier backend may start with punched-out space.
            self.offset = self._punched = first_data(self._fd)
        return self._fd

    def read(self, budget: int = READ_BUDGET) -> int:
        """Read up to ``budget`` new bytes; returns how many were read."""
        fd = self._open()
        if fd is None:
            return 0
        total = 0
        while total < budget:
            chunk = os.pread(fd, min(READ_CHUNK, budget - total), self.offset)
            if not chunk:
                break
            self.offset += len(chunk)
            total += len(chunk)
            self.capture.feed(chunk)
        if total:
            self._release(fd)
        return total

    def _release(self, fd: int) -> None:
        end = (self.offset - KEEP_BYTES) // 4096 * 4096
        if not self._punch_ok or end - self._punched < PUNCH_STEP:
            return
        if self.capture.result_line is not None:
            # The FLOW_RESULT line read so far may sit in the part that goes.
            self._files.result.write_bytes(self.capture.result_line)
        if punch_hole(fd, self._punched, end - self._punched):
            self._punched = end
        else:
            self._punch_ok = False
            get_logger(component="step-files").warning(
                "step.output_not_bounded",
                file=str(self.path),
                problem="this file system cannot punch holes; the file keeps all the output",
            )

    def skip_to_tail(self) -> None:
        """Read only the last :data:`KEEP_BYTES` from here on, and stream none of it: for a
        step stopped early, whose unread backlog may be huge."""
        self.capture.on_line = None
        fd = self._open()
        if fd is not None:
            with contextlib.suppress(OSError):
                self.offset = max(self.offset, os.fstat(fd).st_size - KEEP_BYTES)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
