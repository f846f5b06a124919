"""Line numbers for keys of a TOML document, found by scanning its text.

tomllib returns plain dicts without positions; error messages still have to say where a key
is. This scanner knows just enough TOML to map ``workspace.tasks[2].event.source`` to a line:
table headers, array-of-tables headers (counted per array) and ``key = value`` lines. A key
it cannot find falls back to its entry's header, then to line 1; it never decides validity.
"""

from __future__ import annotations

import re

_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(?:#.*)?$")
_TABLE_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_KEY_LINE = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)
_SEGMENT = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")


def _segments(dotted: str) -> list[str]:
    return [s.strip("\"'") for s in _SEGMENT.findall(dotted)]


class TomlPositions:
    """Where each table, array entry and key of a TOML text starts (1-based lines)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        counts: dict[str, int] = {}
        table = ""
        in_multiline = False
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline:
                if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                    in_multiline = False
                continue
            array = _ARRAY_HEADER.match(line)
            header = None if array else _TABLE_HEADER.match(line)
            if array:
                name = self._resolve(_segments(array.group(1)), counts)
                counts[name] = counts.get(name, -1) + 1
                table = f"{name}[{counts[name]}]"
                self.lines.setdefault(table, number)
                self.lines.setdefault(name, number)
            elif header:
                table = self._resolve(_segments(header.group(1)), counts)
                self.lines.setdefault(table, number)
            else:
                key = _KEY_LINE.match(line)
                if key:
                    parts = _segments(key.group(1))
                    full = ".".join([table, *parts]) if table else ".".join(parts)
                    for depth in range(1, len(parts) + 1):
                        prefix = (
                            ".".join([table, *parts[:depth]]) if table else ".".join(parts[:depth])
                        )
                        self.lines.setdefault(prefix, number)
                    self.lines.setdefault(full, number)
                    rest = line[key.end() :]
                    if rest.count('"""') % 2 == 1 or rest.count("'''") % 2 == 1:
                        in_multiline = True

    @staticmethod
    def _resolve(parts: list[str], counts: dict[str, int]) -> str:
        """``workspace.tasks.event`` inside the 3rd task becomes ``workspace.tasks[2].event``."""
        out: list[str] = []
        for part in parts:
            out.append(part)
            so_far = ".".join(out)
            if so_far in counts and len(out) < len(parts):
                out[-1] = f"{part}[{counts[so_far]}]"
        return ".".join(out)

    def find(self, path: str) -> int | None:
        return self.lines.get(path)

    def top_key(self, key: str) -> int:
        return self.find(key) or 1

    def workspace_key(self, key: str) -> int:
        return self.find(f"workspace.{key}") or self.find("workspace") or 1

    def entry_header(self, table: str, index: int) -> int:
        return self.find(f"workspace.{table}[{index}]") or self.workspace_key(table)

    def entry_key(self, table: str, index: int, keys: tuple[str, ...]) -> int:
        """The line of the deepest of ``keys`` found inside the entry, else its header."""
        base = f"workspace.{table}[{index}]"
        for depth in range(len(keys), 0, -1):
            line = self.find(".".join([base, *keys[:depth]]))
            if line is not None:
                return line
        return self.entry_header(table, index)
