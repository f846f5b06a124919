"""Credentials in URLs, hidden before a URL reaches a message, a log line or a result.

One rule for every URL we show: the whole userinfo (``user:password@``) becomes ``***@``. The
user goes too: a git token is often the user part (``https://TOKEN@host``, or
``https://TOKEN:x-oauth-basic@host``). Standard library only: workspace.toml's broker URL
check uses it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"
"""What a URL's userinfo is shown as."""

# From the scheme's ``//`` up to the last ``@`` before the path or a blank: a password with an
# ``@``, ``?`` or ``#`` in it is hidden whole. Free text has no other bound to go by.
_USERINFO = re.compile(r"(://)[^/\s]+@")


def redact_urls(text: str) -> str:
    """``text`` (a command line, git's output) with the userinfo of every URL in it hidden."""
    return _USERINFO.sub(rf"\1{HIDDEN}@", text)


def redact_url(url: str) -> str:
    """One URL with its userinfo hidden, or ``<unreadable URL>`` when it cannot be parsed.

    A whole URL is parsed first, so its authority is known even where :func:`redact_urls`
    cannot see it (a password with a blank in it, no scheme); then the free-text rule runs too.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable URL>"
    _, at, host = parts.netloc.rpartition("@")
    if at:
        url = urlunsplit(parts._replace(netloc=f"{HIDDEN}@{host}"))
    return redact_urls(url)
