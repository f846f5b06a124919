"""structlog, configured once: JSON lines for the daemon, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured.

    A logger bound to the stream of the moment outlives it when the stream is replaced (a test
    harness capturing output, a daemonising wrapper), and then fails on a closed file.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "warning", json_lines: bool | None = None) -> None:
    """Send logs to stderr; JSON lines unless stderr is a terminal (or ``json_lines`` says)."""
    global _configured
    as_json = (not sys.stderr.isatty()) if json_lines is None else json_lines
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(**context: Any) -> Any:
    """A bound logger; configures defaults on first use."""
    if not _configured:
        configure()
    return structlog.get_logger().bind(**context)
