"""`workspace harness init|release`: build the local harness repos, cut upstream releases."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from workspace_adapter.base.errors import EXIT_OK

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals


def _print_json(document: dict[str, object]) -> None:
    print(json.dumps(document, ensure_ascii=False, separators=(",", ":")))


def init(g: Globals, force: bool, as_json: bool = False) -> int:
    """``--json``: ``{"harness", "upstream", "fork", "remotes", "upstreamTag", "upstreamSha"}``."""
    from workspace_adapter.harness import init_harness, tag_sha

    init_harness(g.workspace_root, force=force)
    harness = g.workspace_root / "harness"
    v013 = tag_sha(g.workspace_root, "v0.1.3")
    if as_json:
        _print_json(
            {
                "harness": str(harness),
                "upstream": str(harness / "upstream"),
                "fork": str(harness / "fork"),
                "remotes": {
                    name: str(harness / "remotes" / f"{name}.git")
                    for name in ("upstream", "origin", "jojo")
                },
                "upstreamTag": "v0.1.3",
                "upstreamSha": v013,
            }
        )
        return EXIT_OK
    print(f"built {harness}")
    print(f"  upstream  harness/upstream, tags v0.1.0..v0.1.3 (v0.1.3 at {v013[:12]})")
    print(
        "  fork      harness/fork, main = v0.1.3 + 3 fork commits; remotes origin, upstream, jojo"
    )
    print("  remotes   harness/remotes/{upstream,origin,jojo}.git (bare)")
    return EXIT_OK


def release(g: Globals, bump: str, conflict: bool, as_json: bool = False) -> int:
    """``--json``: ``{"tag", "sha", "bump", "conflict", "pushedTo"}``."""
    from workspace_adapter.harness import cut_release, tag_sha

    tag = cut_release(g.workspace_root, bump=bump, conflict=conflict)
    sha = tag_sha(g.workspace_root, tag)
    if as_json:
        pushed = g.workspace_root / "harness" / "remotes" / "upstream.git"
        _print_json(
            {"tag": tag, "sha": sha, "bump": bump, "conflict": conflict, "pushedTo": str(pushed)}
        )
        return EXIT_OK
    kind = "conflicting release" if conflict else "release"
    print(f"cut {kind} {tag} at {sha[:12]}, pushed to harness/remotes/upstream.git")
    if conflict:
        print("  it changes the index.js lines of the fork's first commit: rebasing will conflict")
    return EXIT_OK
