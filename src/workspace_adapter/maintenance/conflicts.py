"""Where a patch conflicts with a release, and which upstream commits made it conflict.

A patch's hunks say which lines of its base it changes; a ``-U0`` diff from that base to the
release says where those lines went; ``git log -L`` over ``previous..release`` then names the
upstream commits that touched them. A line next to a changed one counts: git's merge conflicts
on changes that touch, not only on changes that overlap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from workspace_adapter.maintenance.git import Git

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_FAILED_PATH = re.compile(
    r"^error: (?:patch failed: (.+):\d+|(.+): (?:does not match index|does not exist in index"
    r"|already exists in (?:index|working directory)))$"
)
MAX_COMMITS = 20


class UpstreamCommit(msgspec.Struct, frozen=True):
    """An upstream commit since the previous release that touched a patch's lines."""

    sha: str
    subject: str


def changed_regions(diff: str) -> dict[str, list[tuple[int, int]]]:
    """Each file's changed line ranges in the diff's old side, widened by one line each way.

    An insertion after line N is the range (N, N + 1); a new file has no old lines. Only the
    lines a hunk header counts are read, so a mail's signature is never taken for a change.
    """
    regions: dict[str, list[tuple[int, int]]] = {}
    path: str | None = None
    old = old_left = new_left = 0
    pending: int | None = None  # the first old line of the run of changes being read

    def close() -> None:
        nonlocal pending
        if path is not None and pending is not None:
            regions.setdefault(path, []).append((max(1, pending - 1), old))
        pending = None

    for line in diff.splitlines():
        if old_left <= 0 and new_left <= 0:
            close()
            hunk = _HUNK.match(line)
            if hunk:
                old, old_left = int(hunk.group(1)), int(hunk.group(2) or 1)
                new_left = int(hunk.group(4) or 1)
                if old_left == 0:
                    old += 1  # "-N,0": nothing removed, the lines go after line N
            elif line.startswith("--- "):
                name = line[4:].strip().split("\t")[0]
                path = None if name == "/dev/null" else name.removeprefix("a/")
            continue
        kind = line[:1] or " "
        if kind == " ":
            close()
            old, old_left, new_left = old + 1, old_left - 1, new_left - 1
        elif kind == "-":
            pending = old if pending is None else pending
            old, old_left = old + 1, old_left - 1
        elif kind == "+":
            pending = old if pending is None else pending
            new_left -= 1
    close()
    return regions


def _moves(git: Git, base: str, release: str, path: str) -> list[tuple[int, int, int, int]]:
    """(old start, old length, new start, new length) of each change to ``path``."""
    done = git("diff", "-U0", "--no-color", "--no-ext-diff", base, release, "--", path)
    found = []
    for line in done.stdout.splitlines():
        hunk = _HUNK.match(line)
        if hunk:
            a, b, c, d = hunk.groups()
            found.append((int(a), int(b or 1), int(c), int(d or 1)))
    return found


def _moved(line: int, moves: list[tuple[int, int, int, int]], end: bool) -> int:
    """Where ``line`` of the base is in the release (a changed line: the edge of its change)."""
    shift = 0
    for old, old_len, new, new_len in moves:
        last = old + old_len - 1
        if old_len and old <= line <= last:
            return max(new, new + new_len - 1) if end else new
        if (old_len and last < line) or (not old_len and old < line):
            shift += new_len - old_len
    return line + shift


def upstream_commits(
    git: Git,
    previous: str,
    release: str,
    base: str,
    regions: dict[str, list[tuple[int, int]]],
    files: Iterable[str],
) -> list[UpstreamCommit]:
    """The commits of ``previous..release`` that touched the patch's lines in ``files``.

    ``regions`` are in ``base`` coordinates. A file the patch adds, or one the release no
    longer has, is asked about as a whole.
    """
    files = list(files)
    ranges: list[str] = []
    whole: list[str] = []
    for path in files:
        length = _line_count(git, release, path)
        if length is None or not regions.get(path):
            whole.append(path)
            continue
        moves = _moves(git, base, release, path)
        for start, end in regions[path]:
            first = min(max(1, _moved(start, moves, end=False)), length)
            last = min(max(first, _moved(end, moves, end=True)), length)
            ranges += ["-L", f"{first},{last}:{path}"]
    found: list[UpstreamCommit] = []
    span = f"{previous}..{release}"
    if ranges:
        done = git("log", "--no-color", "--format=%x00%H%x09%s", span, *ranges)
        if done.ok:
            found += _commits(line[1:] for line in done.stdout.splitlines() if line[:1] == "\x00")
        else:
            whole += [r.split(":", 1)[1] for r in ranges[1::2]]
    if whole:
        done = git("log", "--no-color", "--format=%H%x09%s", span, "--", *sorted(set(whole)))
        found += _commits(done.stdout.splitlines() if done.ok else [])
    unique = list(dict.fromkeys(found))
    return unique[:MAX_COMMITS]


def _commits(lines: Iterable[str]) -> list[UpstreamCommit]:
    out = []
    for line in lines:
        sha, _, subject = line.partition("\t")
        if sha:
            out.append(UpstreamCommit(sha=sha, subject=subject))
    return out


def _line_count(git: Git, rev: str, path: str) -> int | None:
    """The number of lines of ``path`` in ``rev``; None when it has no such file."""
    done = git("cat-file", "blob", f"{rev}:{path}")
    if not done.ok:
        return None
    return max(1, done.stdout.count("\n") + (0 if done.stdout.endswith("\n") else 1))


def failed_paths(output: str) -> list[str]:
    """The files ``git apply`` names when it gives up without a three-way merge."""
    found = []
    for line in output.splitlines():
        match = _FAILED_PATH.match(line.strip())
        if match:
            found.append(match.group(1) or match.group(2))
    return list(dict.fromkeys(found))


def hunk_labels(regions: dict[str, list[tuple[int, int]]], files: Iterable[str]) -> list[str]:
    """``file:first-last`` for each changed range of ``files`` (lines of the patch's base)."""
    labels = []
    for path in files:
        for start, end in regions.get(path, []):
            labels.append(f"{path}:{start}-{end}" if end > start else f"{path}:{start}")
    return labels
