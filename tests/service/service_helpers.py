"""Helpers of the service-path tests: workspace files, a loopback feed server, feed documents.

The daemon itself is ``support.backend``; steps it runs here never push (:data:`NO_PUSH`).
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

from workspace_adapter.base.globals import Globals
from workspace_adapter.commands import watch
from workspace_adapter.service.records import Records

REPO = "peezy-tech/patch-moi-harness"
NO_PUSH = {"CODEX_FLOW_PUSH": "0"}

GIT_SOURCE = """
[[workspace.sources]]
id = "upstream"
kind = "git-tags"
url = "harness/remotes/upstream.git"
repo = "peezy-tech/patch-moi-harness"
tag_pattern = "v\\\\d+\\\\.\\\\d+\\\\.\\\\d+"
interval = "1h"  # `watch --once` polls whatever the interval
"""


def write_workspace(root: Path, body: str) -> Path:
    path = root / "workspace.toml"
    path.write_text('[workspace]\nname = "svc"\n' + body, encoding="utf-8")
    return path


def globals_for(root: Path, url: str) -> Globals:
    return Globals(workspace_root=root, backend_url=url, mode="local", log_level="warning")


def watch_once(root: Path, url: str) -> int:
    return watch.watch(globals_for(root, url), once=True)


def records(root: Path) -> Records:
    return Records.for_workspace(root).open()


class FeedServer:
    """A stdlib HTTP server on loopback serving files from ``folder``."""

    def __init__(self, folder: Path) -> None:
        handler = _handler_for(folder)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, name: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/{name}"

    def __enter__(self) -> FeedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _handler_for(folder: Path) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def atom_feed(entries: list[tuple[str, str, str, str]]) -> str:
    """An Atom document; entries are (entry id, title, link, updated), newest first."""
    items = "".join(
        f'<entry><id>{eid}</id><title>{title}</title><link rel="alternate" '
        f'type="text/html" href="{link}"/><updated>{updated}</updated></entry>'
        for eid, title, link, updated in entries
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        "<id>tag:github.com,2008:https://github.com/peezy-tech/patch-moi-harness/releases</id>"
        "<title>Release notes</title><updated>2026-01-02T00:00:00Z</updated>"
        f"{items}</feed>"
    )


def rss_feed(items: list[tuple[str, str, str]]) -> str:
    """An RSS 2.0 document; items are (title, link, pubDate), newest first."""
    body = "".join(
        f"<item><title>{title}</title><link>{link}</link><pubDate>{date}</pubDate></item>"
        for title, link, date in items
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Releases</title>'
        f"<link>https://example.org/</link><description>d</description>{body}</channel></rss>"
    )
