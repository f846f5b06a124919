"""Rebuild a maintained branch as a release plus its patch series, in a work tree of its own.

The fork checkout is not touched here: the series is applied, patch by patch, in a detached
``git worktree`` at the release, and each patch is recorded as ``applied`` (its diff applies as
it is), ``merged`` (it needed a three-way merge), ``upstreamed`` (the release has each of its
commits by patch id, or applying it changes nothing) or ``conflict`` (its files, its hunks, and
the upstream commits since the previous release that touched those lines). A conflict stops the
series unless the run continues past conflicts. Only a series that applies as a whole becomes
a rebuilt commit, which :class:`~workspace_adapter.maintenance.engine.ForkMaintenance` then
verifies and publishes like a rebase.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from workspace_adapter.base.status import Status
from workspace_adapter.maintenance.conflicts import (
    UpstreamCommit,
    changed_regions,
    failed_paths,
    hunk_labels,
    upstream_commits,
)
from workspace_adapter.maintenance.git import Completed, Git
from workspace_adapter.maintenance.outcome import Outcome, short
from workspace_adapter.maintenance.patchtable import patch_line
from workspace_adapter.maintenance.progress import Progress
from workspace_adapter.maintenance.publish import CANDIDATE_PREFIX, patch_leases
from workspace_adapter.maintenance.series import Patch, read_series
from workspace_adapter.maintenance.seriesfolder import (
    APPLIED,
    CONFLICT,
    MERGED,
    UPSTREAMED,
    FolderEntry,
    refreshed_folder,
)
from workspace_adapter.maintenance.settings import MaintenanceSettings, PatchSeries
from workspace_adapter.maintenance.worktree import NO_HOOKS, rebuild_worktree, scratch_folder


class PatchReport(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """One line of the per-patch table, as ``artifacts.patches`` carries it."""

    name: str
    status: str
    files: list[str] | None = None
    hunks: list[str] | None = None
    upstream_commits: list[UpstreamCommit] | None = None
    reason: str | None = None
    # The patch refreshed onto the release (a branch series): its candidate ref and commit.
    ref: str | None = None
    sha: str | None = None


class SeriesRebuild:
    """One rebuild of the maintained branch from a release and the fork's patch series."""

    def __init__(
        self,
        git: Git,
        settings: MaintenanceSettings,
        series: PatchSeries,
        progress: Progress,
        identity: Callable[[], list[str]],
    ) -> None:
        self.git = git
        self.settings = settings
        self.series = series
        self.progress = progress
        self.identity = identity
        self.reports: list[PatchReport] = []
        self.head: str | None = None
        self.series_commit: str | None = None
        # (sha, ref) pushed beside the branch, and each push remote's lease on each of them.
        self.pushes: list[tuple[str, str]] = []
        self.leases: dict[str, dict[str, str | None]] = {}
        self._commits: dict[str, tuple[str, str]] = {}  # name: (before, after) in the rebuild
        self._tag = ""

    def as_artifacts(self) -> list[dict[str, Any]]:
        return [msgspec.to_builtins(r) for r in self.reports]

    def candidate_refs(self, pushed: set[str]) -> list[dict[str, Any]]:
        """The refs beside the branch: refreshed patches (and the push remotes' patch branches
        when push is on), the refreshed series."""
        repo = self.settings.fork_repo_full_name
        remotes = list(self.settings.push_remotes) if self.settings.push else []
        refs = [
            {"kind": "patch", "repo": repo, "remote": "local", "ref": r.ref, "sha": r.sha}
            | {"patch": r.name, "pushed": False}
            for r in self.reports
            if r.ref and r.sha
        ]
        refs += [
            {"kind": "patch", "repo": repo, "remote": remote, "ref": ref, "sha": sha}
            | {"patch": ref.removeprefix("refs/heads/"), "pushed": remote in pushed}
            for remote in remotes
            for sha, ref in self.pushes
        ]
        if self.series_commit is not None:
            ref = f"{CANDIDATE_PREFIX}{self._tag}/series"
            refs.append(
                {"kind": "series", "repo": repo, "remote": "local", "ref": ref}
                | {"sha": self.series_commit, "pushed": False}
            )
        return refs

    def rebuilt_ref(self, tag: str) -> str:
        """Where a rebuild whose checks failed is kept (``<tag>`` itself holds the others)."""
        return f"{CANDIDATE_PREFIX}{tag}/rebuilt"

    # -- the rebuild ------------------------------------------------------------------------------

    def rebuild(self, tag: str, release: str, before: str) -> tuple[bool, str]:
        """Apply the series on ``release``; (whether the branch changes, what was done).

        Raises :class:`Outcome` ``needs_intervention`` when a patch conflicts, ``blocked`` when
        the series cannot be read.
        """
        s = self.settings
        self._tag = tag
        previous = self.git.merge_base(before, release)
        if previous is None:
            raise Outcome(
                Status.BLOCKED,
                f"{s.target_branch} shares no history with {tag} in {s.fork_repo}; the patch "
                "series needs the release it was built on",
            )
        with self.progress.phase("rebuild") as phase:
            patches = read_series(self.git, s, self.series, previous)
            phase.summary = f"{len(patches)} patches onto {tag}"
            if s.push:
                branches = [p.name for p in patches if p.kind == "branch"]
                self.leases = patch_leases(self.git, s, branches)
            with (
                scratch_folder() as scratch,
                rebuild_worktree(self.git, release, s.target_branch) as tree,
            ):
                left = self._apply_all(tree, patches, release, previous, scratch)
                problem = self._conflicts(tag, before, len(patches), left)
                if problem is not None:
                    phase.summary = f"{tag} + patches: {self.counts()}" + (
                        f", {left} not tried" if left else ""
                    )
                    raise Outcome(Status.NEEDS_INTERVENTION, problem)
                if self.series.series is not None:
                    entries = [
                        FolderEntry(patch=p, status=r.status, before=b, after=a)
                        for p, r in zip(patches, self.reports, strict=True)
                        for b, a in [self._commits[p.name]]
                    ]
                    self.series_commit = refreshed_folder(
                        self.git, tree, self.series.series, entries, tag, scratch, self._config()
                    )
                self.head = tree.head_sha()
                changed = not (
                    self._same_tree(self.head, before) and self.git.is_ancestor(release, before)
                )
                if changed and self.series.series is None:
                    self._refresh(tree, patches, release)
            counts = self.counts()
            if not changed:
                phase.summary = f"{s.target_branch} is already {tag} + its patches ({counts})"
                return False, (
                    f"{s.fork_repo} {s.target_branch} is already {tag} ({short(release)}) plus "
                    f"its patches ({counts}); nothing to rebuild"
                )
            self._write_candidates(tag)
            phase.summary = f"{tag} + patches ({counts}): {short(before)} -> {short(self.head)}"
        return True, (
            f"rebuilt {s.target_branch} as {tag} ({short(release)}) plus its patches "
            f"({counts}): {short(before)} -> {short(self.head)}"
        )

    def counts(self) -> str:
        order = (APPLIED, MERGED, UPSTREAMED, CONFLICT)
        found = [r.status for r in self.reports]
        return ", ".join(f"{found.count(k)} {k}" for k in order if k in found) or "none"

    def _apply_all(
        self, tree: Git, patches: list[Patch], release: str, previous: str, scratch: Path
    ) -> int:
        """Apply each patch in order; the number of patches left untried after a conflict."""
        for i, patch in enumerate(patches):
            before = tree.head_sha()
            if patch.kind == "branch":
                report = self._apply_branch(tree, patch, release, previous, scratch)
            else:
                report = self._apply_file(tree, patch, release, previous)
            self.reports.append(report)
            self._commits[patch.name] = (before, tree.head_sha())
            self.progress.done("patch", self.line(report))
            if report.status == CONFLICT and not self.settings.continue_past_conflicts:
                return len(patches) - i - 1
        return 0

    def line(self, report: PatchReport) -> str:
        return patch_line(msgspec.to_builtins(report))

    def _conflicts(self, tag: str, before: str, total: int, left: int) -> str | None:
        """The result message of a series with conflicts; None when it has none."""
        s = self.settings
        conflicts = [r for r in self.reports if r.status == CONFLICT]
        if not conflicts:
            return None
        said = "; ".join(self.line(r) for r in conflicts)
        if left:
            what = (
                f"rebuilding {s.target_branch} on {tag} stopped at {said}; {left} "
                f"patch{'es' if left > 1 else ''} after it not tried "
                "(--continue-past-conflicts tries them)"
            )
        else:
            what = (
                f"rebuilding {s.target_branch} on {tag}: {len(conflicts)} of {total} patches "
                f"conflict: {said}; {self.counts()}"
            )
        return f"{what}; {s.fork_repo} left at {short(before)}, nothing written"

    # -- one patch ---------------------------------------------------------------------------------

    def _config(self) -> list[str]:
        return [*self.identity(), NO_HOOKS]

    def _apply_branch(
        self, tree: Git, patch: Patch, release: str, previous: str, scratch: Path
    ) -> PatchReport:
        cherry = self.git("cherry", release, patch.tip, patch.base)
        marks = [line[:1] for line in cherry.stdout.splitlines() if line.strip()]
        if cherry.ok and marks and set(marks) == {"-"}:
            return PatchReport(
                name=patch.name, status=UPSTREAMED, reason="the release has each of its commits"
            )
        diff = scratch / "patch.diff"
        self.git(
            "diff",
            "--binary",
            "--full-index",
            "--no-ext-diff",
            f"--output={diff}",
            patch.base,
            patch.tip,
        )
        clean = tree("apply", "--check", "--cached", str(diff)).ok
        start = tree.head_sha()
        for commit in patch.commits:
            done = tree("cherry-pick", "--no-commit", commit, config=self._config())
            if not done.ok:
                text = diff.read_text(encoding="utf-8", errors="replace")
                return self._conflict(
                    tree, patch.name, start, done, text, patch.base, previous, release
                )
            if tree("diff", "--cached", "--quiet").ok:
                continue  # this commit's change is in the release already
            self._must(
                tree("commit", "--quiet", "--no-verify", "-C", commit, config=self._config())
            )
        return self._result(tree, patch.name, start, clean)

    def _apply_file(self, tree: Git, patch: Patch, release: str, previous: str) -> PatchReport:
        assert patch.path is not None
        path = str(patch.path)
        start = tree.head_sha()
        clean = tree("apply", "--check", "--index", path).ok
        if not clean and tree("apply", "--check", "--reverse", "--index", path).ok:
            return PatchReport(
                name=patch.name, status=UPSTREAMED, reason="the release has its change already"
            )
        if patch.kind == "mail":
            done = tree("am", "--quiet", "-3", path, config=self._config())
            if not done.ok and not tree.unmerged_files() and _empty_mail(done):
                tree("am", "--abort")
                return self._result(tree, patch.name, start, clean)
        else:
            flags = ["--index"] if clean else ["--index", "--3way"]
            done = tree("apply", *flags, path)
            if done.ok and not tree("diff", "--cached", "--quiet").ok:
                message = _subject(patch.path) or f"Apply {patch.name}"
                self._must(
                    tree("commit", "--quiet", "--no-verify", "-m", message, config=self._config())
                )
        if not done.ok:
            text = patch.path.read_text(encoding="utf-8", errors="replace")
            return self._conflict(tree, patch.name, start, done, text, previous, previous, release)
        return self._result(tree, patch.name, start, clean)

    def _result(self, tree: Git, name: str, start: str, clean: bool) -> PatchReport:
        if tree.head_sha() == start:
            return PatchReport(name=name, status=UPSTREAMED, reason="applying it changes nothing")
        return PatchReport(name=name, status=APPLIED if clean else MERGED)

    def _conflict(
        self,
        tree: Git,
        name: str,
        start: str,
        done: Completed,
        diff: str,
        base: str,
        previous: str,
        release: str,
    ) -> PatchReport:
        regions = changed_regions(diff)
        unmerged = tree.unmerged_files()
        files = unmerged or failed_paths(done.stderr) or sorted(regions)
        commits = upstream_commits(self.git, previous, release, base, regions, files)
        self._reset(tree, start)
        return PatchReport(
            name=name,
            status=CONFLICT,
            files=files,
            hunks=hunk_labels(regions, files),
            upstream_commits=commits,
            reason=None if unmerged else done.last_line(),
        )

    def _reset(self, tree: Git, start: str) -> None:
        if (tree.git_dir() / "rebase-apply").exists():
            tree("am", "--abort")
        self._must(tree("reset", "--hard", "--quiet", start))
        tree("clean", "-fdq")

    def _must(self, done: Completed) -> None:
        if not done.ok:
            raise RuntimeError(f"git failed in the rebuild work tree: {done.last_line()}")

    # -- after the series --------------------------------------------------------------------------

    def _same_tree(self, a: str, b: str) -> bool:
        return self.git.resolve_tree(a) == self.git.resolve_tree(b)

    def _refresh(self, tree: Git, patches: list[Patch], release: str) -> None:
        """Each applied branch patch on the release alone: the refreshed patch branch."""
        by_name = {r.name: r for r in self.reports}
        for patch in patches:
            report = by_name[patch.name]
            if report.status not in (APPLIED, MERGED):
                continue
            self._must(tree("reset", "--hard", "--quiet", release))
            for commit in patch.commits:
                if not tree("cherry-pick", "--no-commit", commit, config=self._config()).ok:
                    self._reset(tree, release)
                    self.progress.done(
                        "patch",
                        f"{patch.name}: applies only after the patches before it; no refreshed "
                        "branch for it",
                    )
                    break
                if not tree("diff", "--cached", "--quiet").ok:
                    self._must(
                        tree(
                            "commit", "--quiet", "--no-verify", "-C", commit, config=self._config()
                        )
                    )
            else:
                if tree.head_sha() == release:
                    continue  # nothing of it is left on the release alone
                report.sha = tree.head_sha()
                report.ref = (
                    f"{CANDIDATE_PREFIX}{self._tag}/patch/{patch.name.removeprefix('patch/')}"
                )
                self.pushes.append((report.sha, f"refs/heads/{patch.name}"))

    def _write_candidates(self, tag: str) -> None:
        prefix = f"{CANDIDATE_PREFIX}{tag}"
        # A rebase of the same tag kept its commit as <tag> itself, which blocks <tag>/...
        if self.git.ref_sha(prefix) is not None:
            self.git("update-ref", "-d", prefix)
        written = {r.ref: r.sha for r in self.reports if r.ref and r.sha}
        if self.series_commit is not None:
            written[f"{prefix}/series"] = self.series_commit
        old = self.git("for-each-ref", "--format=%(refname)", f"{prefix}/")
        for ref in old.stdout.split():
            if ref not in written:
                self.git("update-ref", "-d", ref)
        for ref, sha in written.items():
            if sha is not None and not self.git("update-ref", ref, sha).ok:
                self.progress.say(f"cannot write {ref}; the refreshed commit is {short(sha)}")


def _empty_mail(done: Completed) -> bool:
    text = done.stdout + done.stderr
    return "No changes" in text or "Patch is empty" in text


def _subject(path: Path) -> str | None:
    """A plain diff's description: its ``Subject:``/``Description:`` header or first line."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("diff ", "--- ", "Index: ")):
            break
        for key in ("Subject:", "Description:"):
            if line.startswith(key):
                return line[len(key) :].strip() or None
    head = text.split("\n", 1)[0].strip()
    return head if head and not head.startswith(("diff ", "--- ", "Index: ")) else None
