"""A pipe that kills a child's whole process group when this process dies, however it dies.

A command task runs in its own session (:func:`~workspace_adapter.base.processes.spawn`), so
nothing ends it when ``workspace run`` is killed with SIGKILL: no handler runs, and the task,
with all it started, would run on as orphans. The parent-death signal (``prctl``) would reach
only the direct child, and setting it needs code in the child before exec (``preexec_fn``
and ctypes: about 7 ms on a start budget of 15 ms, decision 0001).

This costs a pipe and three ``fcntl`` calls instead. The child group holds the write end
(passed to the leader, inherited by what it starts), marked ``O_ASYNC`` with the group as its
owner and SIGKILL as its signal; this process holds the read end and never reads. When the last
reader of a pipe closes while writers remain, Linux signals the writers' owner: so when this
process ends, even by SIGKILL, every process still in the group gets SIGKILL. What escapes:
a process that left the group (``setsid``, a daemon), and a group in which no process holds the
write end any more (all of them closed it). Linux only; elsewhere it does nothing.

Standard library only: ``workspace run`` of a command task uses it on its fast path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal

_FIRST_FD = 10
"""The child's end is moved at or above this: shells keep 3-9 for scripts (``exec 3>file``)."""


class Lifeline:
    """One armed pipe: :attr:`child_fd` goes to the child (``pass_fds``), then :meth:`tie`."""

    __slots__ = ("_read", "_write")

    def __init__(self) -> None:
        read, write = os.pipe()
        try:
            self._write = fcntl.fcntl(write, fcntl.F_DUPFD_CLOEXEC, _FIRST_FD)
        finally:
            os.close(write)
        self._read = read

    @property
    def child_fd(self) -> int:
        """The write end, to pass to the child (``pass_fds``) and nothing else."""
        return self._write

    def tie(self, pgid: int) -> bool:
        """Have the group ``pgid`` killed when this process dies; False where Linux can't.

        Call it once the child leads its group (Popen returned). Until then the child is not
        covered; before exec it holds nothing of ours anyway.
        """
        set_signal = getattr(fcntl, "F_SETSIG", None)
        if set_signal is None or not hasattr(os, "O_ASYNC"):
            return False
        try:
            fcntl.fcntl(self._write, fcntl.F_SETOWN, -pgid)
            fcntl.fcntl(self._write, set_signal, signal.SIGKILL)
            flags = fcntl.fcntl(self._write, fcntl.F_GETFL)
            fcntl.fcntl(self._write, fcntl.F_SETFL, flags | os.O_ASYNC)
        except OSError:
            return False  # the group is already gone: nothing to tie
        return True

    def cut(self) -> None:
        """Disarm and close: the task is over, whatever it left in its group is not killed.

        The write end is the group's too, so the flag is cleared on it before this process's
        ends are closed; a leftover process still holding it then outlives us as it always
        did (the task runner stops the group itself when it has to).
        """
        if self._read < 0:
            return
        with contextlib.suppress(OSError):
            flags = fcntl.fcntl(self._write, fcntl.F_GETFL)
            fcntl.fcntl(self._write, fcntl.F_SETFL, flags & ~os.O_ASYNC)
        os.close(self._write)
        os.close(self._read)
        self._read = self._write = -1
