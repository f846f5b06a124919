"""Strings from stores and backends as a terminal should see them: control characters visible.

An event sender chooses the ids, timestamps and payloads that come back through ``events``,
``flow-runs``, ``attempts`` and a run's output. Printed raw, ESC and BEL retitle or clear the
terminal, ``\\r`` overwrites what a line said and ``\\n`` breaks a table into lines that are no
rows. Each control character (C0, DEL and C1) is printed as its Python escape (``\\x1b``,
``\\n``) instead. ``--json`` output needs none of this: JSON escapes them itself. Standard
library only, so the quick commands can use it.
"""

from __future__ import annotations

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_CONTROLS = [*range(0x20), *range(0x7F, 0xA0)]


def _table(keep: str) -> dict[int, str]:
    return {
        code: _NAMED.get(chr(code), f"\\x{code:02x}") for code in _CONTROLS if chr(code) not in keep
    }


_CELL, _LINE, _LINES = _table(""), _table("\t"), _table("\t\n")


def cell(value: object) -> str:
    """``value`` for a table cell or a one-line field: every control character escaped."""
    return str(value).translate(_CELL)


def line(value: object) -> str:
    """``value`` for a line of a step's output: as :func:`cell`, but a tab stays a tab."""
    return str(value).translate(_LINE)


def lines(value: object) -> str:
    """``value`` for a message of several lines (one per problem): newlines and tabs stay."""
    return str(value).translate(_LINES)
