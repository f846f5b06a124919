"""base/redact.py: the one rule for credentials in URLs, in free text and in a single URL."""

from __future__ import annotations

import pytest

from workspace_adapter.base.redact import redact_url, redact_urls


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # git's own lines: a token as the user, as user and password, in quotes.
        (
            "fatal: unable to access 'https://ghp_tok@github.com/o/r.git/': 403",
            "fatal: unable to access 'https://***@github.com/o/r.git/': 403",
        ),
        ("https://ghp_tok:x-oauth-basic@github.com/o/r", "https://***@github.com/o/r"),
        ("git push https://u:p@h/a.git main", "git push https://***@h/a.git main"),
        # A password with an @ in it is hidden whole, not up to its first @.
        ("https://u:p@ss@host/x", "https://***@host/x"),
        # Two URLs on a line, and a URL with nothing to hide.
        ("https://a:b@h1/ and ssh://c@h2/", "https://***@h1/ and ssh://***@h2/"),
        ("https://github.com/o/r and mail me@example.com", None),
    ],
)
def test_free_text_hides_every_urls_userinfo(text: str, shown: str | None) -> None:
    assert redact_urls(text) == (text if shown is None else shown)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@10.0.0.1:6379/0", "redis://***@10.0.0.1:6379/0"),
        ("redis://default:s3cret@host/0", "redis://***@host/0"),
        ("rediss://user@host", "rediss://***@host"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        # Only a parsed URL knows where a password with a blank in it ends.
        ("redis://:two words@host/0", "redis://***@host/0"),
        ("//:s3cret@host/0", "//***@host/0"),
        ("redis://:s3cret@[::1/0", "<unreadable URL>"),
    ],
)
def test_a_single_url_is_parsed_then_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in shown and "words" not in shown
