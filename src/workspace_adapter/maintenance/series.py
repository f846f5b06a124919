"""A fork's patch series as one run reads it: which patches, in which order, from where.

Branches come from the fork checkout's own ``refs/heads/``; each one's patch is its commits
since it left the previous release (``merge-base(branch, previous)..branch``). A series folder
is read from the fork checkout's work tree, which rule 4 has made sure is clean, so it is the
maintained branch's committed folder. Whatever cannot be a patch is ``blocked`` with one line
naming it; nothing in the fork is changed here.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Literal

import msgspec

from workspace_adapter.base.status import Status
from workspace_adapter.maintenance.git import Git
from workspace_adapter.maintenance.outcome import Outcome, short
from workspace_adapter.maintenance.settings import MaintenanceSettings, PatchSeries, natural_key

SERIES_FILE = "series"
# `git format-patch` output starts with its mbox line; a mail saved by hand has the headers.
_MBOX_LINE = re.compile(rb"^From [0-9a-f]{40} ")
_HEADER = re.compile(rb"^(From|Subject|Date): ", re.MULTILINE)


class Patch(msgspec.Struct, frozen=True, kw_only=True):
    """One patch of the series: a branch's commits, or a file of the series folder."""

    name: str
    kind: Literal["branch", "diff", "mail"]
    # A branch: its head, where it left the previous release, and its commits, oldest first.
    tip: str = ""
    base: str = ""
    commits: tuple[str, ...] = ()
    # A file: where it is in the fork checkout, and its line in the series file.
    path: Path | None = None
    line: int = 0


def read_series(
    git: Git, settings: MaintenanceSettings, series: PatchSeries, previous: str
) -> list[Patch]:
    """The patches in the order they apply; anything that is no patch ends the run blocked."""
    if series.series is not None:
        return _series_folder(git, settings, series.series)
    names = _branch_names(git, settings, series)
    return [_branch_patch(git, settings, name, previous) for name in names]


def _blocked(message: str) -> Outcome:
    return Outcome(Status.BLOCKED, message)


def _branch_names(git: Git, settings: MaintenanceSettings, series: PatchSeries) -> list[str]:
    fork = settings.fork_repo
    if isinstance(series.branches, str):
        done = git("for-each-ref", "--format=%(refname:strip=2)", "refs/heads/")
        every = [n for n in done.stdout.splitlines() if n and n != settings.target_branch]
        found = sorted(
            (n for n in every if fnmatch.fnmatchcase(n, series.branches)), key=natural_key
        )
        if not found:
            others = ", ".join(sorted(every)) or f"none besides {settings.target_branch}"
            raise _blocked(
                f"patches.branches = {series.branches!r} matches no branch of {fork} (its "
                f"branches: {others}); create the patch branches there or fix the glob"
            )
        return found
    names = list(series.branches or [])
    for i, name in enumerate(names):
        if name == settings.target_branch:
            raise _blocked(
                f"patches.branches[{i}] = {name!r} is the maintained branch itself; list the "
                "patch branches only"
            )
        if git.ref_sha(f"refs/heads/{name}") is None:
            raise _blocked(
                f"patches.branches[{i}]: there is no branch {name!r} in {fork}; create it or "
                "fix the list"
            )
    return names


def _branch_patch(git: Git, settings: MaintenanceSettings, name: str, previous: str) -> Patch:
    fork = settings.fork_repo
    tip = git.resolve_commit(f"refs/heads/{name}")
    base = git.merge_base(tip, previous) if tip else None
    if tip is None or base is None:
        raise _blocked(
            f"patch branch {name} shares no history with the previous release "
            f"({short(previous)}) in {fork}; base it on an upstream release"
        )
    listed = git("rev-list", "--reverse", "--topo-order", f"{base}..{tip}")
    commits = tuple(listed.stdout.split())
    if not commits:
        raise _blocked(
            f"patch branch {name} has no commits of its own since the previous release "
            f"({short(previous)}); drop it from the series or add its change"
        )
    if git("rev-list", "--merges", "--max-count=1", f"{base}..{tip}").stdout.strip():
        raise _blocked(
            f"patch branch {name} has merge commits since {short(base)}; a patch branch must "
            "be a line of commits (rebase it onto its release)"
        )
    return Patch(name=name, kind="branch", tip=tip, base=base, commits=commits)


def _series_folder(git: Git, settings: MaintenanceSettings, folder: str) -> list[Patch]:
    fork, branch = settings.fork_repo, settings.target_branch
    shown = f"{folder.rstrip('/')}/{SERIES_FILE}"
    path = settings.fork_path / folder / SERIES_FILE
    tracked = git("ls-files", "--error-unmatch", "--", shown)
    if not path.is_file() or not tracked.ok:
        raise _blocked(
            f"patches.series: {shown} is not a committed file of {branch} in {fork}; commit "
            "the series folder (a `series` file naming one patch file per line) there"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _blocked(f"{shown}: cannot be read ({exc}); fix the file") from None
    patches: list[Patch] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split() if not raw.lstrip().startswith("#") else []
        if not words:
            continue
        where = f"{shown}:{number}"
        name = words[0]
        if words[1:] not in ([], ["-p1"]):
            raise _blocked(
                f"{where}: {' '.join(words[1:])!r} after {name} is not supported (only -p1); "
                "regenerate the patch with a/ and b/ prefixes"
            )
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise _blocked(f"{where}: {name!r} must name a file inside {folder}")
        if name in seen:
            raise _blocked(f"{where}: {name} is listed twice; a patch applies once")
        seen.add(name)
        patches.append(_patch_file(git, settings.fork_path / folder / name, name, where))
    if not patches:
        raise _blocked(f"{shown} names no patch; list the patch files, one a line")
    return patches


def _patch_file(git: Git, path: Path, name: str, where: str) -> Patch:
    if not path.is_file():
        raise _blocked(f"{where}: patch file {name} does not exist; add it or drop the line")
    head = path.read_bytes()[:4096]
    checked = git("apply", "--numstat", str(path))
    if not checked.ok or not checked.stdout.strip():
        why = checked.last_line() if not checked.ok else "no file changes in it"
        raise _blocked(f"{where}: {name} is not a patch ({why}); fix or drop the line")
    header = head.split(b"\n\n", 1)[0]
    mail = bool(_MBOX_LINE.match(head)) or len(set(_HEADER.findall(header))) >= 2
    return Patch(
        name=name, kind="mail" if mail else "diff", path=path, line=int(where.rsplit(":", 1)[1])
    )
