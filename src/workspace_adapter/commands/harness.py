"""`workspace harness init|release`: build the local harness repos, cut upstream releases."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from workspace_adapter.base.errors import EXIT_OK

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals


def _print_json(document: dict[str, object]) -> None:
    print(json.dumps(document, ensure_ascii=False, separators=(",", ":")))


# The fork entry that maintains the patch harness, for the user's workspace.toml.
PATCH_FORK_ENTRY = """[[workspace.forks]]
name = "harness"
path = "harness/fork"
repo = "peezy-tech/patch-moi-harness"
upstream_url = "harness/remotes/upstream.git"
push_remotes = ["origin", "jojo"]
verify_commands = ["npm test"]
patches = { branches = "patch/*" }"""


def init(g: Globals, force: bool, as_json: bool = False, patches: bool = False) -> int:
    """``--json``: ``{"harness", "upstream", "fork", "remotes", "upstreamTag", "upstreamSha"}``
    and, with ``patches``, ``"patchBranches"``."""
    from workspace_adapter.harness import init_harness, tag_sha
    from workspace_adapter.patchharness import PATCH_BRANCHES, init_patch_harness

    if patches:
        init_patch_harness(g.workspace_root, force=force)
    else:
        init_harness(g.workspace_root, force=force)
    harness = g.workspace_root / "harness"
    v013 = tag_sha(g.workspace_root, "v0.1.3")
    if as_json:
        document: dict[str, object] = {
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
        if patches:
            document["patchBranches"] = list(PATCH_BRANCHES)
        _print_json(document)
        return EXIT_OK
    print(f"built {harness}")
    print(f"  upstream  harness/upstream, tags v0.1.0..v0.1.3 (v0.1.3 at {v013[:12]})")
    if patches:
        print("  fork      harness/fork, main = v0.1.3 + 3 patch branches, in order:")
        for branch in PATCH_BRANCHES:
            print(f"              {branch}")
        print("            remotes origin, upstream, jojo")
    else:
        print(
            "  fork      harness/fork, main = v0.1.3 + 3 fork commits; remotes origin, "
            "upstream, jojo"
        )
    print("  remotes   harness/remotes/{upstream,origin,jojo}.git (bare)")
    if patches:
        print("maintain it with this entry in workspace.toml:")
        print(PATCH_FORK_ENTRY)
        print(
            "then: workspace harness release --patches; workspace flow run fork-maintenance "
            "--fork harness --tag v0.1.4"
        )
    return EXIT_OK


def release(
    g: Globals, bump: str, conflict: bool, as_json: bool = False, patches: bool = False
) -> int:
    """``--json``: ``{"tag", "sha", "bump", "conflict", "pushedTo"}`` and, with ``patches``,
    ``"case"`` (what the release does to the patch series)."""
    from workspace_adapter.base.errors import UserError
    from workspace_adapter.harness import cut_release, tag_sha
    from workspace_adapter.patchharness import cut_patch_release

    case = None
    if patches:
        if conflict or bump != "patch":
            raise UserError("--patches cuts the next case itself; leave out --conflict and --bump")
        tag, case = cut_patch_release(g.workspace_root)
    else:
        tag = cut_release(g.workspace_root, bump=bump, conflict=conflict)
    sha = tag_sha(g.workspace_root, tag)
    if as_json:
        pushed = g.workspace_root / "harness" / "remotes" / "upstream.git"
        _print_json(
            {"tag": tag, "sha": sha, "bump": bump, "conflict": conflict, "pushedTo": str(pushed)}
            | ({"case": case} if case else {})
        )
        return EXIT_OK
    kind = "conflicting release" if conflict else "release"
    print(f"cut {kind} {tag} at {sha[:12]}, pushed to harness/remotes/upstream.git")
    if conflict:
        print("  it changes the index.js lines of the fork's first commit: rebasing will conflict")
    if case:
        print(f"  {case}")
    return EXIT_OK
