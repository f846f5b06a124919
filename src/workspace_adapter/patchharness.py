"""The patch-series harness: the tutorial's upstream, and a fork kept as three patch branches.

``workspace harness init --patches`` builds ``harness/`` as :mod:`workspace_adapter.harness`
does, with a fork whose ``main`` is v0.1.3 plus three independent patch branches applied in
order, each based on v0.1.3 and pushed with ``main`` to ``origin`` and ``jojo``:

* ``patch/010-add-numbers``: ``add()`` coerces its arguments; the next upstream release takes
  the very same change, so the patch becomes ``upstreamed``;
* ``patch/020-fork-banner``: ``forkBanner()`` on the line upstream later changes (two commits:
  the function, then its test), so the release after that conflicts with it;
* ``patch/030-fork-readme``: a README note that stays clean.

``workspace harness release --patches`` cuts those releases in order: v0.1.4 takes patch 010
(a commit with the patch's own diff, then the version bump), v0.1.5 changes the exports line
patch 020 changes, and every later one is a plain maintenance release. Fixed identities and
dates, so every machine gets the same shas.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from workspace_adapter.harness import (
    _EPOCH,
    _FORK_README_NOTE,
    _FORK_TEST,
    FORK_WHO,
    UPSTREAM_WHO,
    _commit,
    _git,
    _write,
    cut_release,
    init_harness,
    next_version,
    release_time,
    start_fork,
    with_fork_banner,
)

PATCH_BRANCHES = ("patch/010-add-numbers", "patch/020-fork-banner", "patch/030-fork-readme")
ABSORBING = (0, 1, 4)
CONFLICTING = (0, 1, 5)
_ADD_BEFORE = "  return a + b;\n"
_ADD_AFTER = "  return Number(a) + Number(b);\n"
_ADD_SUBJECT = "add(): coerce both arguments to numbers"


def _numbers(index: str) -> str:
    if _ADD_BEFORE not in index:
        raise AssertionError("the harness's add() has changed; update patchharness")
    return index.replace(_ADD_BEFORE, _ADD_AFTER, 1)


def _patch_commits(fork: Path) -> dict[str, list[tuple[dict[str, str], str]]]:
    """Each patch branch's commits on v0.1.3: (files, message), in order."""
    index = (fork / "index.js").read_text(encoding="utf-8")
    readme = (fork / "README.md").read_text(encoding="utf-8") + _FORK_README_NOTE
    return {
        PATCH_BRANCHES[0]: [({"index.js": _numbers(index)}, _ADD_SUBJECT)],
        PATCH_BRANCHES[1]: [
            ({"index.js": with_fork_banner(index)}, "fork: add forkBanner()"),
            ({"test/fork.test.js": _FORK_TEST}, "fork: test forkBanner()"),
        ],
        PATCH_BRANCHES[2]: [({"README.md": readme}, "fork: note what the fork carries")],
    }


def build_patch_fork(harness: Path) -> None:
    """``harness/fork``: the patch branches on v0.1.3, and ``main`` = v0.1.3 + each of them."""
    fork = start_fork(harness)
    commits = _patch_commits(fork)
    hour = 0
    for branch, steps in commits.items():
        _git(fork, "checkout", "--quiet", "-B", branch, "refs/tags/v0.1.3")
        for files, message in steps:
            _write(fork, files)
            _commit(fork, message, FORK_WHO, _EPOCH + dt.timedelta(days=40, hours=hour))
            hour += 1
    _git(fork, "checkout", "--quiet", "main")
    when = _EPOCH + dt.timedelta(days=41)
    for branch in PATCH_BRANCHES:
        _git(fork, "cherry-pick", f"refs/tags/v0.1.3..{branch}", who=FORK_WHO, when=when)
    _git(fork, "push", "--quiet", "-u", "origin", "main", *PATCH_BRANCHES)
    _git(fork, "push", "--quiet", "jojo", "main", *PATCH_BRANCHES)


def init_patch_harness(root: Path, *, force: bool = False) -> None:
    """Build ``root/harness`` with the patch-series fork; refuse to replace one."""
    init_harness(root, force=force, build_fork=build_patch_fork)


def cut_patch_release(root: Path) -> tuple[str, str]:
    """Cut the next release of the patch harness; returns the tag and what it does to the fork.

    The case follows from the version, so the releases come in order: v0.1.4 absorbs patch 010,
    v0.1.5 conflicts with patch 020, later ones touch no patch.
    """
    version = next_version(root)
    if version == ABSORBING:
        upstream = root / "harness" / "upstream"
        _git(upstream, "checkout", "--quiet", "main")
        index = (upstream / "index.js").read_text(encoding="utf-8")
        _write(upstream, {"index.js": _numbers(index)})
        # The fork's own change, taken as it is: its author, its message, so its patch id.
        taken = release_time(version) - dt.timedelta(hours=1)
        _git(upstream, "add", "--all", who=UPSTREAM_WHO, when=taken)
        author = f"--author={FORK_WHO[0]} <{FORK_WHO[1]}>"
        _git(upstream, "commit", "--quiet", "--no-verify", author, "-m", _ADD_SUBJECT, when=taken)
        tag = cut_release(root, note="Take add() number coercion from the fork.")
        return tag, f"it takes {PATCH_BRANCHES[0]} as it is: that patch becomes upstreamed"
    if version == CONFLICTING:
        tag = cut_release(root, conflict=True)
        return tag, f"it changes the exports line {PATCH_BRANCHES[1]} changes: that patch conflicts"
    return cut_release(root), "a maintenance release: every patch still applies"
