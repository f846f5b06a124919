"""structlog, configured once: JSON lines for the daemon, readable lines on a terminal.

:func:`setup` records the command line's ``--log-level`` and ``--log-format`` for every
command, at start-up, and imports nothing (``workspace run`` and ``tick`` load only the
standard library). :func:`configure` applies them: the daemons call it before they start, and
any other command's first :func:`get_logger` does. Once applied, the standard library's
loggers (uvicorn's startup, handshake and access lines, asyncio, warnings) go through the same
renderer, so in JSON mode every line on stderr is one JSON object.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "console")

_wanted: dict[str, Any] = {"level": "warning", "format": None, "daemon": False}
_HANDLER_NAME = "workspace-logs"
_applied: dict[str, Any] | None = None
"""What :func:`configure` applied: level, format (``json`` or ``console``), daemon."""


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured.

    A logger bound to the stream of the moment outlives it when the stream is replaced (a test
    harness capturing output, a daemonising wrapper), and then fails on a closed file.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def setup(level: str, log_format: str | None = None, *, daemon: bool = False) -> None:
    """Record the wanted level and format (``json``, ``console``, None: by stderr) for
    :func:`configure`; ``daemon``: a failure that ends the command is a log line too.

    Standard library only, and cheap: every command calls it.
    """
    _wanted.update(level=level, format=log_format, daemon=daemon)


def format_for(log_format: str | None) -> str:
    """``json`` or ``console``: as asked, else console on a terminal and JSON otherwise."""
    if log_format in FORMATS:
        return str(log_format)
    return "console" if sys.stderr.isatty() else "json"


def colours_wanted() -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org)."""
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def configure(
    level: str | None = None, log_format: str | None = None, json_lines: bool | None = None
) -> None:
    """Send logs to stderr at ``level`` and up, as ``log_format``; both default to what
    :func:`setup` recorded (``json_lines`` is the older spelling of the format).
    """
    global _applied
    import logging

    import structlog

    level = (level or _wanted["level"]).lower()
    if json_lines is not None and log_format is None:
        log_format = "json" if json_lines else "console"
    chosen = format_for(log_format or _wanted["format"])
    number = logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if chosen == "json"
        else structlog.dev.ConsoleRenderer(colors=colours_wanted())
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    _route_stdlib(number, renderer, timestamper)
    _applied = {"level": level, "format": chosen, "daemon": _wanted["daemon"]}


def _route_stdlib(number: int, renderer: Any, timestamper: Any) -> None:
    """The root logger's one handler renders like structlog: uvicorn, asyncio, warnings."""
    import logging

    import structlog

    formatter = structlog.stdlib.ProcessorFormatter(
        pass_foreign_args=True,  # for _uvicorn_access_fields, which drops them
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
            _uvicorn_access_fields,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(_CurrentStderr())
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)  # configured again (tests): one handler, never two
    root.addHandler(handler)
    root.setLevel(number)
    logging.captureWarnings(True)


def _uvicorn_access_fields(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """uvicorn's access lines as fields: client, method, path, status (its message stays)."""
    args = event.pop("positional_args", None)
    record = event.get("_record")
    access = getattr(record, "name", "") == "uvicorn.access"
    if access and isinstance(args, tuple) and len(args) == 5:
        event.update(client=args[0], method=args[1], path=args[2], status=args[4])
    return event


def json_mode() -> bool:
    """Whether logs were applied as JSON lines (for a daemon's last words, see :func:`failed`)."""
    return _applied is not None and _applied["format"] == "json"


def notice(event: str, line: str, **fields: Any) -> None:
    """A line for the person at the terminal, on stderr; a JSON-mode daemon logs it instead.

    So that a daemon's stderr in JSON mode is JSON on every line, whatever it has to say.
    """
    if _applied is not None and _applied["daemon"] and _applied["format"] == "json":
        get_logger().info(event, message=line, **fields)
        return
    print(line, file=sys.stderr, flush=True)


def failed(message: str, exit_code: int) -> bool:
    """A daemon in JSON mode says why it ends as one JSON line; False when it should print.

    Called for the one-line error of a command that ends on a failure.
    """
    if _applied is None or not _applied["daemon"] or _applied["format"] != "json":
        return False
    get_logger().error("command.failed", message=message, exit_code=exit_code)
    return True


def get_logger(**context: Any) -> Any:
    """A bound logger; configures what :func:`setup` recorded on first use."""
    import structlog

    if _applied is None:
        configure()
    return structlog.get_logger().bind(**context)
