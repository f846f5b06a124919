"""Child processes in their own session: start them, stop all they started, tell them apart.

Everything that runs someone else's program (command tasks, flow steps, the notify command)
starts it as the leader of a new session, so its process group holds whatever it starts, and
stops it the same way: SIGTERM to the group, a grace period for all of it to end, SIGKILL to
what is left. A group id is the leader's pid, and a pid is reused once its process is reaped:
before signalling, the group's leader is checked against the start marker read from
``/proc/<pid>/stat`` when it was spawned. This module is the one reader of ``/proc`` and of
pidfds, and it words how a child failed to start or how it ended, for every caller alike.

Standard library only, and cheap to import: ``workspace run`` loads it on its fast path.
The async helpers import anyio when they are called.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

    import anyio.abc

KILL_SETTLE_SECONDS = 2.0
"""After SIGKILL, how long to wait for the group's processes to be gone before returning."""

_POLL_SECONDS = 0.05
"""Nothing signals "the group is empty": how often to look while waiting for it."""

_PROC = Path("/proc")


class ProcStat:
    """The fields of ``/proc/<pid>/stat`` this package uses."""

    # A plain class, not a NamedTuple: this module is on the CLI's start-up path.
    __slots__ = ("pgid", "pid", "ppid", "start_ticks", "state")

    def __init__(self, pid: int, state: str, ppid: int, pgid: int, start_ticks: str) -> None:
        self.pid = pid
        self.state = state
        self.ppid = ppid
        self.pgid = pgid
        # Clock ticks after boot: with the boot id, it tells a reused pid apart.
        self.start_ticks = start_ticks

    @property
    def running(self) -> bool:
        """False for a zombie (exited, not reaped) or a process being torn down."""
        return self.state not in ("Z", "X")

    @property
    def marker(self) -> str:
        return f"{_boot_id()}:{self.start_ticks}"


def _parse_stat(pid: int, text: str) -> ProcStat | None:
    # The command name may hold spaces and parentheses; fields are counted after the last ")".
    fields = text.rsplit(")", 1)[-1].split()
    if len(fields) <= 19:
        return None
    try:
        return ProcStat(pid, fields[0], int(fields[1]), int(fields[2]), fields[19])
    except ValueError:
        return None


def read_stat(pid: int) -> ProcStat | None:
    """``/proc/<pid>/stat`` of a process, or None when it is gone (or there is no /proc)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return _parse_stat(pid, text)


def processes() -> Iterator[ProcStat]:
    """Every process this one can see in ``/proc``; nothing where there is no /proc."""
    try:
        entries = list(os.scandir(_PROC))
    except OSError:
        return
    for entry in entries:
        if entry.name.isdigit() and (stat := read_stat(int(entry.name))) is not None:
            yield stat


def children(ppid: int | None = None) -> list[ProcStat]:
    """The live child processes of ``ppid`` (default: this process)."""
    parent = os.getpid() if ppid is None else ppid
    return [p for p in processes() if p.ppid == parent and p.running]


@functools.lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> list[str] | None:
    """The argv of process ``pid`` from ``/proc/<pid>/cmdline``; None when it is gone (or
    there is no /proc), [] for a zombie or a kernel thread."""
    try:
        data = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    if not data:
        return []
    # Each argument ends with a NUL; a process that rewrote its title may have left it off.
    return [os.fsdecode(arg) for arg in data.removesuffix(b"\0").split(b"\0")]


def rss_kib() -> int:
    """This process's resident set size in KiB (``/proc/self/statm``); 0 where it cannot be
    read (no /proc)."""
    try:
        with open(_PROC / "self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * (os.sysconf("SC_PAGE_SIZE") // 1024)


def process_marker(pid: int) -> str:
    """Something that changes when ``pid`` is reused: boot id + start time (Linux), else ""."""
    stat = read_stat(pid)
    return stat.marker if stat is not None else ""


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
        text = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    stat = _parse_stat(pid, text)
    if stat is None:
        return True
    if not stat.running:
        return False
    return not marker or stat.marker == marker


class ProcessGroup:
    """The process group led by a child we started in its own session.

    ``marker`` is the leader's start marker, read right after it was spawned; "" where there
    is no /proc (then the group is trusted as long as it exists).
    """

    __slots__ = ("marker", "pid")

    def __init__(self, pid: int, marker: str) -> None:
        self.pid = pid
        self.marker = marker

    def __repr__(self) -> str:
        return f"ProcessGroup(pid={self.pid}, marker={self.marker!r})"

    @classmethod
    def of(cls, pid: int) -> ProcessGroup:
        """The group of a child that was just spawned with ``start_new_session=True``."""
        return cls(pid, process_marker(pid))

    def is_ours(self) -> bool:
        """False once the group id names a group we did not start.

        While the leader is not reaped (running or a zombie) its stat carries our marker. Once
        it is reaped, Linux keeps its pid from reuse as long as any process is still in its
        group; so a process under that pid with another marker means our group is empty and
        the id now belongs to someone else.
        """
        stat = read_stat(self.pid)
        if stat is None:
            return True
        return stat.marker == self.marker

    def signal(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to every process of the group; False when nothing was signalled."""
        if not self.is_ours():
            return False
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def alive(self) -> bool:
        """True while a live (not zombie) process is left in the group."""
        try:
            os.killpg(self.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        if not self.is_ours():
            return False
        if not _PROC.is_dir():
            return True
        # Orphans are reparented to PID 1, which in a container may never reap them: a zombie
        # still answers signal 0, so look at the process state instead.
        return any(p.pgid == self.pid and p.running for p in processes())


def path_with_interpreter(path: str | None, python: str | None = None) -> str:
    """``path`` (a PATH value) with the folder of ``python`` (default: this interpreter) first.

    Whatever a child runs as ``workspace`` or ``python`` then resolves to this installation.
    Not resolved: a virtualenv's bin/python is a symlink, and its bin/ holds ``workspace``. An
    unset or empty ``path`` is the system default: an empty PATH entry would mean the current
    folder.
    """
    folder = os.path.dirname(sys.executable if python is None else python)
    return os.pathsep.join([folder, path or os.defpath])


def start_failure(program: str, exc: OSError) -> str:
    """Why ``program`` did not start, in one line; ``exc`` is what starting it raised."""
    if isinstance(exc, FileNotFoundError):
        where = "no such file" if os.sep in program else "not on PATH"
        return f"program not found: {program} ({where})"
    if isinstance(exc, PermissionError):
        return f"program not executable: {program}"
    return f"could not start {program}: {exc.strerror or exc}"


def exit_reason(code: int) -> str:
    """How a child that ended with exit status ``code`` (negative: the signal that killed it,
    as :class:`~subprocess.Popen` reports it) ended, in words."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:  # a real-time signal between SIGRTMIN and SIGRTMAX has no name
        name = str(-code)
    return f"killed by signal {name}"


def spawn(argv: list[str], **popen: Any) -> tuple[subprocess.Popen[bytes], ProcessGroup]:
    """Start ``argv`` as the leader of a new session; ``popen`` goes to :class:`~subprocess.Popen`.

    Raises OSError as Popen does (program not found, not executable).
    """
    import subprocess

    proc: subprocess.Popen[bytes] = subprocess.Popen(argv, start_new_session=True, **popen)
    return proc, ProcessGroup.of(proc.pid)


async def spawn_async(argv: list[str], **options: Any) -> tuple[anyio.abc.Process, ProcessGroup]:
    """:func:`spawn` with :func:`anyio.open_process` (``options`` go to it)."""
    import anyio

    process = await anyio.open_process(argv, start_new_session=True, **options)
    return process, ProcessGroup.of(process.pid)


def _wait_group(group: ProcessGroup, until: float) -> None:
    while group.alive() and time.monotonic() < until:
        time.sleep(_POLL_SECONDS)


def stop_group(proc: subprocess.Popen[Any], group: ProcessGroup, grace: float) -> int:
    """SIGTERM ``group``, give all of it ``grace`` seconds, SIGKILL what is left; reap ``proc``.

    ``proc`` is the group's leader; a leader that already exited is fine (its leftovers get the
    same treatment). Returns the leader's exit code (negative: the signal that ended it).
    """
    import subprocess

    deadline = time.monotonic() + grace
    if group.signal(signal.SIGTERM):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, deadline - time.monotonic()))
        _wait_group(group, deadline)
    if group.signal(signal.SIGKILL):
        _wait_group(group, time.monotonic() + KILL_SETTLE_SECONDS)
    return proc.wait()


async def stop_group_async(process: anyio.abc.Process, group: ProcessGroup, grace: float) -> int:
    """:func:`stop_group` for an anyio process; shielded, so a cancelled caller still stops it.

    Returns the leader's exit code; the caller still closes the process's streams.
    """
    await stop_group_after(process.wait, group, grace)
    return await process.wait()


async def stop_group_after(
    wait_leader: Callable[[], Awaitable[object]], group: ProcessGroup, grace: float
) -> None:
    """:func:`stop_group` where ``wait_leader()`` returns once the group's leader has ended.

    For a leader that is not an anyio process: a ``Popen`` child, or a step left running by an
    earlier backend (not our child at all: see :func:`wait_exit`). Shielded like
    :func:`stop_group_async`.
    """
    import anyio
    import anyio.to_thread

    async def wait_group(seconds: float) -> None:
        until = time.monotonic() + seconds
        with anyio.move_on_after(seconds):
            await wait_leader()
        # Scanning /proc is blocking file I/O: keep it off the event loop.
        await anyio.to_thread.run_sync(_wait_group, group, until)

    with anyio.CancelScope(shield=True):
        if group.signal(signal.SIGTERM):
            await wait_group(grace)
        if group.signal(signal.SIGKILL):
            await wait_group(KILL_SETTLE_SECONDS)


async def wait_exit(pid: int) -> None:
    """Return once process ``pid`` has ended (a zombie counts), whoever its parent is.

    Linux gives a pidfd that turns readable then, which also works for a process this one did
    not start (a step left running by an earlier backend); elsewhere this polls. Reaping a
    child stays the caller's business.
    """
    import anyio

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        # Nothing to wait on but the process table: look again every poll interval.
        while True:
            if not process_alive(pid, None):
                return
            await anyio.sleep(_POLL_SECONDS)
    try:
        await anyio.wait_readable(fd)
    finally:
        os.close(fd)


def wait_exit_sync(proc: subprocess.Popen[Any], timeout: float) -> int:
    """``proc.wait(timeout)`` (its exit code, or :class:`~subprocess.TimeoutExpired`), woken by
    the exit itself rather than by polling; the blocking twin of :func:`wait_exit`.

    Popen's wait with a timeout checks, sleeps, and doubles the sleep up to 50 ms, so a child
    that ends in 3 ms may be noticed 4 ms later and one that ends in 30 ms up to 30 ms later.
    A pidfd becomes readable the moment the process exits (Linux 5.3+; elsewhere: Popen's).
    """
    import select
    import subprocess

    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return proc.wait(timeout)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(max(0, int(timeout * 1000))):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(fd)
    return proc.wait()


def signal_child_groups(sig: signal.Signals) -> list[int]:
    """Signal the group of every child of this process that leads one; returns the groups.

    For a daemon stopping: its children started in their own sessions (command tasks) go with
    all they started. A child is not reaped while it shows up here, so its pid is still its own.
    """
    own = os.getpgid(0)
    groups: list[int] = []
    for child in children():
        if child.pgid == child.pid != own and child.pid not in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, sig)
                groups.append(child.pid)
    return groups
