"""``workspace watch`` over feed sources served by a real loopback HTTP server."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_helpers import FeedServer, atom_feed, records, rss_feed, watch_once, write_workspace
from support.backend import dead_url

GH = "https://github.com/peezy-tech/patch-moi-harness/releases/tag"


def sources_toml(server: FeedServer) -> str:
    entries = []
    for source_id, name, repo in (
        ("broken", "broken.atom", "o/broken"),
        ("atom", "releases.atom", "peezy-tech/patch-moi-harness"),
        ("rss", "releases.rss", "o/rss-project"),
    ):
        entries.append(
            f'[[workspace.sources]]\nid = "{source_id}"\nkind = "feed"\n'
            f'url = "{server.url(name)}"\nrepo = "{repo}"\ninterval = "1h"\n'
            'payload = { channel = "releases" }\n'
        )
    return "\n".join(entries)


def test_feeds_give_tags_from_links_and_a_malformed_one_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    served = tmp_path / "served"
    served.mkdir()
    root = tmp_path / "ws"
    root.mkdir()
    (served / "broken.atom").write_text('<feed xmlns="http://www.w3.org/2005/Atom"><entry>')
    first = ("urn:1", "First light", f"{GH}/v0.1.3", "2026-01-01T00:00:00Z")
    (served / "releases.atom").write_text(atom_feed([first]))
    (served / "releases.rss").write_text(
        rss_feed([("v2.0.0", "https://example.org/2.0.0", "Thu, 01 Jan 2026 00:00:00 GMT")])
    )
    down = dead_url()
    with FeedServer(served) as server:
        write_workspace(root, sources_toml(server))
        # The broken source fails (exit 1); the others prime all the same.
        assert watch_once(root, down) == 1
        captured = capsys.readouterr()
        assert "broken: poll failed: feed http://" in captured.err
        assert "is malformed" in captured.err
        assert "atom: primed with 1 release(s) (v0.1.3)" in captured.out
        assert "rss: primed with 1 release(s) (v2.0.0)" in captured.out

        (served / "releases.atom").write_text(
            atom_feed(
                [("urn:2", "Maintenance release 🎉", f"{GH}/v0.1.4", "2026-01-02T00:00:00Z"), first]
            )
        )
        (served / "releases.rss").write_text(
            rss_feed(
                [
                    ("Version 2.1 is out", f"{GH}/v2.1.0", "Fri, 02 Jan 2026 00:00:00 GMT"),
                    ("v2.0.0", "https://example.org/2.0.0", "Thu, 01 Jan 2026 00:00:00 GMT"),
                ]
            )
        )
        assert watch_once(root, down) == 4  # found, recorded, but no backend to take them

    store = records(root)
    tags = {a.upstream_repo: a.upstream_tag for a in store.attempts()}
    assert tags == {"peezy-tech/patch-moi-harness": "v0.1.4", "o/rss-project": "v2.1.0"}
    event = store.event("patch:atom:v0.1.4:upstream.release")
    assert event is not None
    assert event["occurredAt"] == "2026-01-02T00:00:00.000Z"
    assert event["payload"] == {
        "channel": "releases",
        "provider": "github",
        "repo": "peezy-tech/patch-moi-harness",
        "tag": "v0.1.4",
        "url": f"{GH}/v0.1.4",
        "publishedAt": "2026-01-02T00:00:00.000Z",
    }
    broken = store.cursor("broken")
    assert broken is not None
    assert broken.failures == 2 and broken.primed_at is None
    assert "is malformed" in (broken.last_error or "")
    assert all(a.status == "undelivered" for a in store.attempts())
