"""The feed source: Atom and RSS over a real loopback HTTP server, parsed with feedparser."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import pytest
from service_helpers import FeedServer, atom_feed, rss_feed

from workspace_adapter.local.config import SourceConfig
from workspace_adapter.sources import poll
from workspace_adapter.sources.feed import parse
from workspace_adapter.sources.release import SourceError

GH = "https://github.com/peezy-tech/patch-moi-harness/releases/tag"


def test_atom_tags_come_from_the_release_link_then_the_entry_id_then_the_title() -> None:
    document = atom_feed(
        [
            # Newest first, as GitHub lists them.
            (
                "urn:x:3",
                "Release 0.3 – the title is not the tag",
                f"{GH}/v0.3.0",
                "2026-01-03T00:00:00Z",
            ),
            (
                "tag:github.com,2008:Repository/4242/v0.2.0",
                "Second",
                "https://example.org/notes/2",
                "2026-01-02T00:00:00Z",
            ),
            ("urn:x:1", "v0.1.0", "https://example.org/notes/1", "2026-01-01T10:30:00+02:00"),
        ]
    ).encode()
    found = parse(document, "http://feed")
    assert [r.tag for r in found] == ["v0.1.0", "v0.2.0", "v0.3.0"]
    newest = found[-1]
    assert newest.url == f"{GH}/v0.3.0"
    assert newest.provider == "github"
    assert newest.published_at == "2026-01-03T00:00:00.000Z"
    assert found[0].provider == "feed"
    assert found[0].published_at == "2026-01-01T08:30:00.000Z"


def test_an_escaped_tag_in_the_link_is_decoded() -> None:
    document = atom_feed([("urn:1", "x", f"{GH}/release%2F1.2", "2026-01-01T00:00:00Z")])
    assert [r.tag for r in parse(document.encode())] == ["release/1.2"]


def test_rss_items_work_too() -> None:
    document = rss_feed(
        [
            ("Version two", f"{GH}/v2.0.0", "Fri, 02 Jan 2026 00:00:00 GMT"),
            ("v1.0.0", "https://example.org/1", "Thu, 01 Jan 2026 00:00:00 GMT"),
        ]
    ).encode()
    found = parse(document, "http://feed")
    assert [(r.tag, r.published_at) for r in found] == [
        ("v1.0.0", "2026-01-01T00:00:00.000Z"),
        ("v2.0.0", "2026-01-02T00:00:00.000Z"),
    ]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><title>v1</title>', "malformed"),
        (b"<html><body>Not found</body></html>", "not an Atom or RSS feed"),
        (b"just text", "malformed"),
    ],
)
def test_a_broken_document_is_a_source_error(document: bytes, problem: str) -> None:
    with pytest.raises(SourceError, match=problem):
        parse(document, "http://feed")


async def test_a_feed_over_http_with_its_tag_pattern(tmp_path: Path) -> None:
    (tmp_path / "releases.atom").write_text(
        atom_feed(
            [
                ("urn:3", "Nightly", f"{GH}/nightly", "2026-01-03T00:00:00Z"),
                ("urn:2", "Maintenance release", f"{GH}/v0.1.4", "2026-01-02T00:00:00Z"),
                ("urn:1", "First", f"{GH}/v0.1.3", "2026-01-01T00:00:00Z"),
            ]
        )
    )
    with FeedServer(tmp_path) as server:
        config = SourceConfig(
            id="gh",
            kind="feed",
            url=server.url("releases.atom"),
            repo="o/r",
            tag_pattern=r"v\d+\.\d+\.\d+",
        )
        found = await poll(config, tmp_path)
        assert [r.tag for r in found] == ["v0.1.3", "v0.1.4"]
        missing = SourceConfig(id="gh", kind="feed", url=server.url("nope.atom"), repo="o/r")
        with pytest.raises(SourceError, match="HTTP 404"):
            await poll(missing, tmp_path)


async def test_nothing_listening_is_a_source_error_naming_the_url(tmp_path: Path) -> None:
    with FeedServer(tmp_path) as server:
        url = server.url("gone.atom")
    config = SourceConfig(id="gh", kind="feed", url=url, repo="o/r")
    with pytest.raises(SourceError, match=r"cannot fetch feed http://127\.0\.0\.1"):
        await poll(config, tmp_path)


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Answers 200, then one byte of a feed every 50 ms: slow enough to never finish."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/atom+xml")
        self.end_headers()
        try:
            for byte in atom_feed([]).encode() * 100:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_a_server_that_trickles_its_answer_fails_at_the_timeout(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        config = SourceConfig(id="slow", kind="feed", url=f"http://{host!s}:{port}/", repo="o/r")
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"no complete answer within 0\.5s"):
            await poll(config, tmp_path, 0.5)
        assert time.monotonic() - started < 3
    finally:
        server.shutdown()
        server.server_close()
