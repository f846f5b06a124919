"""What a maintenance run says while it works, as lines on the step's stdout.

By default one line per phase (fetch, rebase, each check, publish) with its duration, and the
tail of a check's output when it fails; verbose (``workspace flow run -v``, or
``CODEX_FLOW_VERBOSE=1`` in a backend's environment) adds every command as it starts and the
tools' full output. The lines carry no terminal escape codes: the step writes to a pipe, and
whoever shows the lines decides about colour. The result record is not affected: every
command's bounded output stays in ``artifacts.commands`` either way.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping

from workspace_adapter.base.flags import env_flag

VERBOSE_ENV = "CODEX_FLOW_VERBOSE"
FAILED_TAIL_LINES = 20
PHASE_WIDTH = 8

# CSI (colours, cursor moves), OSC (titles, links) and the two-byte escapes tools send.
_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def verbose_from(env: Mapping[str, str]) -> bool:
    """Whether ``env`` asks for every command and the tools' full output (a flag word)."""
    return env_flag(env.get(VERBOSE_ENV, ""))


def plain(line: str) -> str:
    """``line`` as a terminal would end up showing it, without the codes that drew it."""
    line = _ESCAPE.sub("", line)
    if "\r" in line:
        # A progress meter redraws its line; what counts is the last drawing with text in it.
        drawn = [part for part in line.split("\r") if part.strip()]
        line = drawn[-1] if drawn else ""
    return _CONTROL.sub("", line).rstrip()


def seconds(value: float) -> str:
    if value < 10:
        return f"{value:.2f}s"
    if value < 60:
        return f"{value:.1f}s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes}m{rest:02d}s"


class Phase:
    """One phase under way; ``summary`` is what its line says after the phase name."""

    __slots__ = ("name", "summary")

    def __init__(self, name: str, summary: str) -> None:
        self.name = name
        self.summary = summary


class Progress:
    """Turns a run's happenings into lines on ``emit``, short unless ``verbose``."""

    def __init__(self, emit: Callable[[str], None], verbose: bool) -> None:
        self.emit = emit
        self.verbose = verbose

    def say(self, line: str) -> None:
        """A line worth reading in any case (a remote added, a remote skipped)."""
        self.emit(plain(line))

    def detail(self, line: str) -> None:
        """A command as it starts, a line of a tool's output: shown only when verbose."""
        if self.verbose:
            self.emit(plain(line))

    def done(self, name: str, summary: str, took: float | None = None) -> None:
        """The one line of a finished phase."""
        timing = f" ({seconds(took)})" if took is not None else ""
        self.say(f"{name:<{PHASE_WIDTH}} {summary}{timing}")

    def tail(self, output: str, lines: int = FAILED_TAIL_LINES) -> None:
        """The last ``lines`` lines of a failed tool's output (already shown when verbose)."""
        if self.verbose:
            return
        shown = [plain(line) for line in output.splitlines()]
        shown = [line for line in shown if line][-lines:]
        for line in shown:
            self.emit(f"    {line}")

    @contextlib.contextmanager
    def phase(self, name: str, summary: str = "") -> Iterator[Phase]:
        """Time the block and say its line when it ends; ``stopped`` if it raised."""
        phase = Phase(name, summary)
        started = time.perf_counter()
        try:
            yield phase
        except Exception:
            self.done(name, phase.summary or "stopped", time.perf_counter() - started)
            raise
        self.done(name, phase.summary, time.perf_counter() - started)
