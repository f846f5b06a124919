"""The display helper on plain values: every control character visible, nothing else touched."""

from __future__ import annotations

from workspace_adapter.base.display import cell, line, lines


def test_a_cell_shows_every_control_character_as_its_escape() -> None:
    raw = "id\x1b]0;title\x07\x1b[2J\r\n\tend\x00\x7f\x9b"
    assert cell(raw) == "id\\x1b]0;title\\x07\\x1b[2J\\r\\n\\tend\\x00\\x7f\\x9b"
    assert cell("plain, ünïcode ✓ and \\ backslash") == "plain, ünïcode ✓ and \\ backslash"
    assert cell(None) == "None"


def test_a_line_keeps_tabs_and_a_message_keeps_its_lines() -> None:
    assert line("a\tb\nc\x1b") == "a\tb\\nc\\x1b"
    assert lines("first\nsecond\x07\r") == "first\nsecond\\x07\\r"
