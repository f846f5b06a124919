"""Lines handed to a callback in a thread of their own, through a bounded buffer.

For a reader of a socket that must never wait on where the lines go: a terminal, or a pipe
nobody reads. Standard library only.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

RELAY_LIMIT_CHARS = 4 * 1024 * 1024
"""Output waiting for the callback, at most; more is dropped and counted."""

LineCallback = Callable[[str, str, str], None]
"""Called with (run id, stream, line)."""
NoticeCallback = Callable[[str], None]
"""Called with a one-line warning for the user (output lost, a connection dropped)."""


class OutputRelay:
    """Hands output lines to a callback in a thread of its own, through a bounded buffer.

    The event loop reads the WebSocket; a callback that writes to a pipe nobody reads would
    block it, the backend's outbox for us would fill, and the backend would close us as a slow
    subscriber (1008). Here the loop only appends a line; while more than ``limit`` characters
    wait, new lines are dropped and counted. Notices are never dropped.
    """

    def __init__(
        self,
        deliver: LineCallback,
        notice: NoticeCallback,
        limit: int = RELAY_LIMIT_CHARS,
    ) -> None:
        self._deliver = deliver
        self._notice = notice
        self._limit = limit
        self._items: deque[tuple[str, str, str] | str] = deque()
        self._size = 0
        self._closed = False  # no more lines: the thread ends once it delivered what waits
        self._stopped = False  # close() was called
        self._error: BaseException | None = None
        self.dropped = 0
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="output-relay", daemon=True)
        self._thread.start()

    def __call__(self, run_id: str, stream: str, line: str) -> None:
        with self._changed:
            if self._size and self._size + len(line) > self._limit:
                self.dropped += 1
                return
            self._items.append((run_id, stream, line))
            self._size += len(line)
            self._changed.notify()

    def notice(self, text: str) -> None:
        """A one-line warning, in order with the output around it."""
        with self._changed:
            self._items.append(text)
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._items and not self._closed:
                    self._changed.wait()
                if not self._items:
                    return
                batch = list(self._items)
                self._items.clear()
                self._size = 0
            try:
                for item in batch:
                    if isinstance(item, str):
                        self._notice(item)
                    else:
                        self._deliver(*item)
            except BaseException as exc:  # a closed stdout, say: the caller hears it in close()
                with self._changed:
                    self._error = exc
                    self._closed = True
                    self._items.clear()
                return

    def close(self, *, drain: bool = True) -> None:
        """Deliver what waits (``drain``) or drop it, then stop; re-raises the callback's error.

        Without ``drain`` the thread is given a moment to finish the line it is writing and is
        then left behind (a daemon thread blocked on a pipe nobody reads). Closing again does
        nothing more.
        """
        with self._changed:
            if self._stopped:
                return
            self._stopped = True
            if not drain:
                self._items.clear()
            self._closed = True
            self._changed.notify()
        self._thread.join(None if drain else 0.5)
        if self.dropped and drain:
            self._notice(
                f"{self.dropped} output line(s) not shown: this command's output was read "
                "more slowly than the runs wrote it"
            )
        if self._error is not None and drain:
            raise self._error
