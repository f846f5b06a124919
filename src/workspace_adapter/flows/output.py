"""A step's output as the runner reads it: lines, a bounded tail, and its FLOW_RESULT line.

No I/O of its own: :class:`StreamCapture` is fed bytes from a pipe and keeps a bounded
:class:`~workspace_adapter.base.tails.OutputTail` and one ``MAX_LINE_BYTES`` line, whatever
the step prints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import msgspec

from workspace_adapter.base.tails import OutputTail
from workspace_adapter.events import RESULT_LINE_PREFIX, FlowResult

# Longest line we parse; a FLOW_RESULT with bounded command output fits well inside it.
MAX_LINE_BYTES = 1024 * 1024
# Lines handed to ``on_line`` are cut shorter: they go to terminals and WebSocket subscribers.
STREAM_LINE_BYTES = 16 * 1024
RESULT_PREFIX = RESULT_LINE_PREFIX.encode()

OnLine = Callable[[str, str], None]


class StreamCapture:
    """Splits one pipe into lines, keeping a bounded tail and the last FLOW_RESULT line."""

    def __init__(self, name: str, on_line: OnLine | None) -> None:
        self.name = name
        self.on_line = on_line
        self.tail = OutputTail()
        self.line = bytearray()
        self.dropped = 0
        self.result_line: bytes | None = None
        self.result_dropped = 0
        self.closed = anyio.Event()

    async def pump(self, stream: anyio.abc.ByteReceiveStream) -> None:
        try:
            while True:
                try:
                    chunk = await stream.receive(65536)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
                self.feed(chunk)
        finally:
            self.finish()
            self.closed.set()

    def feed(self, chunk: bytes) -> None:
        self.tail.add(chunk)
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                self._add(chunk[start:])
                return
            self._add(chunk[start:newline])
            self._emit()
            start = newline + 1

    def finish(self) -> None:
        if self.line or self.dropped:
            self._emit()

    def tail_text(self) -> str:
        return self.tail.text()

    def _add(self, piece: bytes) -> None:
        room = MAX_LINE_BYTES - len(self.line)
        if len(piece) > room:
            self.line += piece[:room]
            self.dropped += len(piece) - room
        else:
            self.line += piece

    def _emit(self) -> None:
        raw = bytes(self.line)
        dropped = self.dropped
        self.line.clear()
        self.dropped = 0
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if self.name == "stdout" and raw.startswith(RESULT_PREFIX):
            self.result_line, self.result_dropped = raw, dropped
        if self.on_line is not None:
            text = raw[:STREAM_LINE_BYTES].decode("utf-8", errors="replace")
            cut = dropped + max(0, len(raw) - STREAM_LINE_BYTES)
            if cut:
                text += f" … [{cut} more bytes cut]"
            self.on_line(self.name, text)


def parse_result(line: bytes | None, dropped: int = 0) -> tuple[dict[str, Any] | None, str | None]:
    """Decode a FLOW_RESULT line: ``(result, None)`` or ``(None, one-line reason)``."""
    if line is None:
        return None, "printed no FLOW_RESULT line"
    if dropped:
        return None, f"FLOW_RESULT is not valid: the line is longer than {MAX_LINE_BYTES} bytes"
    try:
        raw = msgspec.json.decode(line[len(RESULT_PREFIX) :])
    except msgspec.DecodeError as exc:
        return None, f"FLOW_RESULT is not valid: {exc}"
    if not isinstance(raw, dict):
        return None, "FLOW_RESULT is not valid: expected a JSON object"
    try:
        msgspec.convert(raw, FlowResult)
    except msgspec.ValidationError as exc:
        return None, f"FLOW_RESULT is not valid: {exc}"
    return raw, None
