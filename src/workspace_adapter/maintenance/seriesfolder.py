"""The series folder as a rebuild leaves it: each patch file refreshed against the release.

The rebuilt branch carries its series folder as the maintained branch did, in one last commit
on top of the applied patches, and that commit is the candidate with the refreshed patch files:
a patch that applied as it was keeps its file byte for byte, one that needed a three-way merge
is written again from what the merge made (a plain diff keeps its description, a mail is
written by ``git format-patch``), and one upstream has taken is commented out of ``series``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec

from workspace_adapter.maintenance.git import Git
from workspace_adapter.maintenance.series import SERIES_FILE, Patch

# How a patch applied in a rebuild (its status in the per-patch table): as it was, by a
# three-way merge, not at all because the release has it, or not at all.
APPLIED, MERGED, UPSTREAMED, CONFLICT = "applied", "merged", "upstreamed", "conflict"

_DIFF_START = (b"diff --git ", b"--- ", b"Index: ")


class FolderEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A patch of the folder, how it applied, and its commit in the rebuild (before, after)."""

    patch: Patch
    status: str
    before: str
    after: str


def refreshed_folder(
    source: Git,
    tree: Git,
    folder: str,
    entries: list[FolderEntry],
    tag: str,
    scratch: Path,
    config: list[str],
) -> str | None:
    """Write ``folder`` into the rebuild's work tree, refreshed, and commit it; that commit."""
    listed = source("ls-files", "-z", "--", folder)
    for name in listed.stdout.split("\0"):
        if name:
            target = tree.repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.repo / name, target)
    series = tree.repo / folder / SERIES_FILE
    lines = series.read_text(encoding="utf-8").splitlines(keepends=True)
    for entry in entries:
        target = tree.repo / folder / entry.patch.name
        if entry.status == MERGED:
            _rewrite(tree, entry, target, scratch)
        elif entry.status == UPSTREAMED:
            target.unlink(missing_ok=True)
            lines[entry.patch.line - 1] = f"# {entry.patch.name}: upstreamed in {tag}\n"
    series.write_text("".join(lines), encoding="utf-8")
    tree("add", "--all", "--", folder)
    if tree("diff", "--cached", "--quiet").ok:
        return None
    message = f"{folder}: the patch series as rebuilt on {tag}"
    done = tree("commit", "--quiet", "--no-verify", "-m", message, config=config)
    if not done.ok:
        raise RuntimeError(f"cannot commit the refreshed {folder}: {done.last_line()}")
    return tree.head_sha()


def _rewrite(tree: Git, entry: FolderEntry, target: Path, scratch: Path) -> None:
    if entry.patch.kind == "mail":
        out = scratch / "mail"
        shutil.rmtree(out, ignore_errors=True)
        tree("format-patch", "--quiet", "-1", "--zero-commit", "-o", str(out), entry.after)
        made = sorted(out.glob("*.patch"))
        if made:
            shutil.copyfile(made[0], target)
        return
    original = target.read_bytes()
    preamble = b""
    for line in original.splitlines(keepends=True):
        if line.startswith(_DIFF_START):
            break
        preamble += line
    diff = scratch / "refreshed.diff"
    tree(
        "diff",
        "--binary",
        "--full-index",
        "--no-ext-diff",
        f"--output={diff}",
        entry.before,
        entry.after,
    )
    target.write_bytes(preamble + diff.read_bytes())
