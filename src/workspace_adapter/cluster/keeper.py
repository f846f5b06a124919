"""Steps die with their worker, however it dies: lifelines held by a small keeper process.

A step runs in its own session (:mod:`~workspace_adapter.flows.runner`), so killing a worker
would leave it running unseen while its run is redelivered elsewhere. Each step gets a
:class:`~workspace_adapter.base.lifeline.Lifeline` tied to its process group: the worker keeps
the read end, and the write end goes to the keeper (over a socket, ``SCM_RIGHTS``), a tiny
process in a session of its own that only holds those ends. When the worker dies, even by
SIGKILL, the last reader of each pipe is gone while the keeper still holds a writer, so Linux
sends SIGKILL to each step's group at once. The keeper sees the worker's socket close and
exits a moment later (after the kernel has closed the worker's ends, so the signals are out).

The step runner starts the step; the worker ties its lifeline when it learns the pid, a few
milliseconds later. A worker killed inside that window leaves that one step to its timeout.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys

from workspace_adapter.base.lifeline import Lifeline
from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.processes import ProcessGroup, spawn, stop_group

LINGER_SECONDS = 2.0
"""How long the keeper stays after its worker is gone, holding the write ends."""

_KEEPER = r"""
import os, signal, socket, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
sock = socket.socket(fileno=int(sys.argv[1]))
held = {}
while True:
    try:
        message, fds, _, _ = socket.recv_fds(sock, 256, 4)
    except InterruptedError:
        continue
    except OSError:
        break
    if not message:
        break
    word, _, key = message.decode().partition(" ")
    if word == "hold" and fds:
        old = held.pop(key, None)
        if old is not None:
            os.close(old)
        held[key] = fds[0]
        fds = fds[1:]
    elif word == "drop":
        fd = held.pop(key, None)
        if fd is not None:
            os.close(fd)
    for fd in fds:
        os.close(fd)
time.sleep(float(sys.argv[2]))
"""


class StepKeeper:
    """The keeper process of one worker (see the module docstring); started on first use."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._proc: tuple[subprocess.Popen[bytes], ProcessGroup] | None = None
        self._log = get_logger(component="step-keeper")

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # In a session of its own: a Ctrl-C or a signal to the worker's group spares it.
            self._proc = spawn(
                [sys.executable, "-S", "-c", _KEEPER, str(theirs.fileno()), str(LINGER_SECONDS)],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._sock = ours
        self._log.info("keeper.started", pid=self._proc[0].pid)
        return ours

    def _send(self, message: str, fds: list[int]) -> None:
        sock = self._sock or self._start()
        try:
            socket.send_fds(sock, [message.encode()], fds)
        except OSError:
            # The keeper died: a new one, and the message again.
            self._log.warning("keeper.lost", problem="the step keeper ended; starting another")
            self.close()
            socket.send_fds(self._start(), [message.encode()], fds)

    def guard(self, key: str, pgid: int) -> Lifeline | None:
        """Have the group ``pgid`` killed when this process dies; None where Linux can't."""
        lifeline = Lifeline()
        if not lifeline.tie(pgid):
            lifeline.cut()
            return None
        try:
            self._send(f"hold {key}", [lifeline.child_fd])
        except OSError as exc:
            lifeline.cut()
            self._log.error("keeper.unusable", problem=str(exc))
            return None
        return lifeline

    def release(self, key: str, lifeline: Lifeline) -> None:
        """The step ended: disarm its lifeline, and have the keeper close its end."""
        lifeline.cut()
        with contextlib.suppress(OSError):
            self._send(f"drop {key}", [])

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            stop_group(*self._proc, grace=LINGER_SECONDS + 1)
            self._proc = None
