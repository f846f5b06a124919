"""How a flow result reads on a terminal (``flows/summary.py``)."""

from __future__ import annotations

import io

import pytest

from workspace_adapter.flows.summary import paint


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("value", ["1", "0", "anything"])
def test_no_color_with_a_value_leaves_the_status_plain(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("NO_COLOR", value)
    assert paint("failed", Terminal()) == "failed"


def test_an_empty_no_color_asks_for_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # https://no-color.org: "when present and not an empty string"; as base/logs reads it.
    monkeypatch.setenv("NO_COLOR", "")
    assert paint("failed", Terminal()) == "\033[31mfailed\033[0m"


def test_a_stream_that_is_not_a_terminal_is_never_coloured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert paint("completed", io.StringIO()) == "completed"
    assert paint("completed", Terminal()) == "\033[32mcompleted\033[0m"
