"""The end of a process's output, bounded: what run records keep of stdout and stderr."""

from __future__ import annotations

TAIL_BYTES = 64 * 1024
"""How much of each stream a run record keeps (its last bytes)."""


class OutputTail:
    """The last ``limit`` bytes of a stream, without keeping the whole stream.

    The buffer grows to twice the limit before it is cut back, so adding stays cheap however
    small the chunks are.
    """

    __slots__ = ("_cut", "_data", "limit")

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self._data = bytearray()
        self._cut = False

    def add(self, chunk: bytes) -> None:
        self._data += chunk
        if len(self._data) > 2 * self.limit:
            del self._data[: -self.limit]
            self._cut = True

    def data(self) -> bytes:
        """The kept bytes: at most ``limit``."""
        return bytes(self._data[-self.limit :])

    def text(self) -> str:
        """The kept bytes as UTF-8; a character cut in half at the start is left out."""
        data = self.data()
        if self._cut or len(self._data) > self.limit:
            # Skip the continuation bytes (10xxxxxx) of a sequence whose start was dropped.
            start = 0
            while start < min(3, len(data)) and data[start] & 0xC0 == 0x80:
                start += 1
            data = data[start:]
        return data.decode("utf-8", errors="replace")
