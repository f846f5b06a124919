"""The ``feed`` source: an Atom or RSS release feed over HTTP, read with feedparser.

The tag of an entry comes, in this order, from a ``/releases/tag/<tag>`` link (titles are
often "Release 1.2 – the fast one"), from a GitHub-style entry id
``tag:github.com,2008:Repository/<n>/<tag>``, and last from the title.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import anyio
import feedparser  # type: ignore[import-untyped, unused-ignore]

from workspace_adapter import __version__
from workspace_adapter.base.times import iso
from workspace_adapter.sources.release import Release, SourceError

MAX_FEED_BYTES = 8 * 1024 * 1024
_RELEASE_LINK = re.compile(r"/releases/tag/([^/?#]+)")
_GITHUB_ID = re.compile(r"^tag:github\.com,\d+:Repository/\d+/(.+)$")
# feedparser flags these as "bozo" yet parsed the feed fine.
_BENIGN = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)


def fetch(url: str, timeout: float) -> bytes:
    """The feed's bytes; :class:`SourceError` naming the URL and what went wrong.

    ``timeout`` bounds the whole fetch, not only each read: a server that trickles its
    answer must not hold the watcher's pass.
    """
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(
        url,
        headers={
            "User-Agent": f"workspace-adapter/{__version__}",
            "Accept": "application/atom+xml, application/rss+xml, application/xml;q=0.9, */*;q=0.5",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = bytearray()
            while len(data) <= MAX_FEED_BYTES:
                chunk = response.read1(64 * 1024)
                if not chunk:
                    break
                data.extend(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no complete answer within {timeout:g}s")
    except urllib.error.HTTPError as exc:
        raise SourceError(f"feed {url} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        why = f"cannot fetch feed {url}: {exc.reason}; check the source's url"
        raise SourceError(why) from None
    except (TimeoutError, OSError) as exc:
        raise SourceError(f"cannot fetch feed {url}: {exc}") from None
    except ValueError as exc:
        raise SourceError(f"feed url {url!r} is not a URL: {exc}") from None
    if len(data) > MAX_FEED_BYTES:
        raise SourceError(f"feed {url} is larger than {MAX_FEED_BYTES // (1024 * 1024)} MiB")
    return bytes(data)


def tag_of(entry: Any) -> str | None:
    """The release tag of a feed entry (link, then GitHub entry id, then title), or None."""
    hrefs = [link.get("href") for link in entry.get("links", [])]
    hrefs.append(entry.get("link"))
    for href in hrefs:
        if isinstance(href, str) and (match := _RELEASE_LINK.search(href)):
            return urllib.parse.unquote(match.group(1))
    entry_id = entry.get("id")
    if isinstance(entry_id, str) and (match := _GITHUB_ID.match(entry_id.strip())):
        return match.group(1)
    title = entry.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()
    return None


def _published(entry: Any) -> str | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if parsed is None:
        return None
    # feedparser normalises dates to UTC struct_time; written as every other stored time is.
    return iso(dt.datetime.fromtimestamp(calendar.timegm(parsed), dt.UTC))


def _provider(link: str | None) -> str:
    host = urllib.parse.urlsplit(link or "").hostname or ""
    return "github" if host == "github.com" or host.endswith(".github.com") else "feed"


def parse(data: bytes, url: str = "") -> list[Release]:
    """The releases of an Atom or RSS document, oldest first as the feed lists them.

    Feeds list the newest entry first; the order is reversed so that, before the version
    sort, non-version tags keep their publication order.
    """
    parsed = feedparser.parse(data, sanitize_html=False, resolve_relative_uris=False)
    problem = parsed.get("bozo_exception")
    if parsed.get("bozo") and not isinstance(problem, _BENIGN):
        raise SourceError(f"feed {url} is malformed: {problem}")
    if not parsed.get("version"):
        raise SourceError(f"{url} is not an Atom or RSS feed")
    found: list[Release] = []
    for entry in reversed(parsed.entries):
        tag = tag_of(entry)
        if tag is None:
            continue
        link = entry.get("link")
        found.append(
            Release(
                tag=tag,
                provider=_provider(link),
                url=link if isinstance(link, str) else None,
                published_at=_published(entry),
            )
        )
    return found


async def releases(url: str, timeout: float) -> list[Release]:
    """Fetch and parse the feed at ``url`` in a worker thread (urllib blocks, parsing a big
    feed takes a while; neither may stall the event loop)."""
    return await anyio.to_thread.run_sync(lambda: parse(fetch(url, timeout), url))
