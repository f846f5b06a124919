"""Expected failures as one line, unexpected ones as one line plus a log file.

Modelled on pre-commit's error_handler: commands raise :class:`UserError` for anything the
operator can fix; everything else is written to ``.workspace/logs/`` with its traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NEEDS_PERSON = 3
EXIT_BACKEND_UNREACHABLE = 4


class UserError(Exception):
    """A failure the operator can act on: printed as one line, with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class BackendUnreachable(UserError):
    """No workspace backend answers at the URL."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"backend not reachable at {url}; start it with `workspace backend`",
            EXIT_BACKEND_UNREACHABLE,
        )
        self.url = url


_STATUS_WORDS = {401: "unauthorized", 403: "forbidden"}


class BackendRefused(UserError):
    """The backend answered, and refused us: HTTP 401 or 403 on the WebSocket upgrade.

    Exit code 4 like an unreachable backend (the work cannot reach it), but the line names the
    status and what fixes it, never "start it": it is running. ``token_env`` is the variable
    the client sends its bearer token from; ``token_sent`` whether one was sent.
    """

    def __init__(self, url: str, status: int, *, token_env: str, token_sent: bool) -> None:
        said = f"{status} {_STATUS_WORDS.get(status, 'refused')}"
        cause = f"{said} from {url}"
        if status == 403:
            fix = (
                f"the backend refuses this client; check {token_env} (the bearer token sent) "
                "and the backend's --allow-origin"
            )
        elif token_sent:
            fix = f"the backend does not accept the token in {token_env}; set it to its token"
        else:
            fix = f"the backend needs a token; set {token_env} to it (its --token-file)"
        super().__init__(f"{cause}: {fix}", EXIT_BACKEND_UNREACHABLE)
        self.url = url
        self.status = status
        self.reason = f"backend refused: {said}"
        """Short, for a run record's ``reason``."""


def write_crash_log(root: Path, exc: BaseException, kind: str) -> str:
    """Write ``exc``'s traceback to ``root/.workspace/logs/<kind>-*.log``; the clause naming it.

    The clause is ``"; traceback in <path>"``, or empty when the file cannot be written.
    """
    import traceback  # only on a crash: the quick commands never pay for it

    folder = root / ".workspace" / "logs"
    path = folder / f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    except OSError:
        # A full disk: an empty log would point at nothing.
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        return ""
    return f"; traceback in {path}"


@contextlib.contextmanager
def error_handler(root: Path | None = None) -> Iterator[None]:
    """Turn exceptions into one line on stderr and an exit code (raised as SystemExit)."""
    try:
        yield
    except UserError as exc:
        _say_error(exc.message, exc.exit_code)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:
        # `workspace runs | head`: the reader left, which is not an error worth a crash log.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(141) from None
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        where = write_crash_log(root if root is not None else Path.cwd(), exc, "crash")
        _say_error(f"unexpected {type(exc).__name__}: {exc}{where}", EXIT_FAILED)
        raise SystemExit(EXIT_FAILED) from None


def _say_error(message: str, exit_code: int) -> None:
    """``error: <message>`` on stderr; a daemon logging JSON lines says it as one of those."""
    logs = sys.modules.get("workspace_adapter.base.logs")  # never imported just for this
    if logs is None or not logs.failed(message, exit_code):
        from workspace_adapter.base.display import lines

        # A message may quote what a backend or a store said: no raw control characters.
        print(f"error: {lines(message)}", file=sys.stderr)
