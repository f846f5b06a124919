"""The broker URL rule, shared by workspace.toml's schema and the command-line flags.

A Redis broker is reached at ``redis://`` (or ``rediss://`` with TLS). Anything but a loopback
address must carry a password: a Redis that answers anyone on the network hands out every
event and step output of the workspace. The password never shows in a message or a log line.

Standard library only: workspace.toml's schema uses it.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from workspace_adapter.base.hosts import is_loopback
from workspace_adapter.base.redact import redact_url

SCHEMES = ("redis", "rediss")
BROKER_ENV = "CODEX_WORKSPACE_BROKER_URL"
"""Where a broker URL with a password is read from, so it stays out of ``ps`` and the config."""


def broker_problem(url: str) -> str | None:
    """Why ``url`` is not a usable broker URL (one line, no password in it), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{redact_url(url)!r} is not a URL ({exc})"
    if parts.scheme not in SCHEMES:
        return f"{redact_url(url)!r} is not a Redis URL; write redis://[:PASSWORD@]HOST[:PORT][/DB]"
    host = parts.hostname or ""
    if not host:
        return f"{redact_url(url)!r} names no host; write redis://HOST:PORT/DB"
    if port == 0:
        return f"{redact_url(url)!r}: port 0 is not a port"
    if not is_loopback(host) and not parts.password:
        return (
            f"{redact_url(url)!r} is not on this machine and has no password; give the Redis "
            f"password in the URL (redis://:PASSWORD@{host}...), best through {BROKER_ENV}"
        )
    return None


def chosen_broker(flag: str | None, configured: str | None) -> str | None:
    """The broker URL in force: ``--broker``, then :data:`BROKER_ENV`, then workspace.toml."""
    return flag or os.environ.get(BROKER_ENV) or configured or None
