"""ForkMaintenance: rebase a fork's branch onto an upstream release, verify it, publish it.

The rules are numbered 1-10 in the comments below. The engine never leaves the fork
half-way: a stopped rebase is aborted, a failed check puts the branch back, and the branch the
checkout was on is restored whatever happens. A fork with a patch series is rebuilt instead of
rebased (:mod:`.patches`); checks and publishing are the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workspace_adapter.base import status as status_rule
from workspace_adapter.base.status import Status
from workspace_adapter.events import FlowResult
from workspace_adapter.maintenance.checkout import (
    FoundCheckout,
    abort_rebase,
    found_checkout,
    require_own_repository,
    revert_leftovers,
    switch_back,
)
from workspace_adapter.maintenance.git import CommandLog, Git
from workspace_adapter.maintenance.outcome import Outcome, log_traceback, one_line, short
from workspace_adapter.maintenance.progress import Phase, Progress, verbose_from
from workspace_adapter.maintenance.publish import (
    branch_refs,
    keep_candidate,
    push_atomic,
    push_with_lease,
    run_checks,
)
from workspace_adapter.maintenance.remotes import ensure_remotes, fetch_for_lease, leases
from workspace_adapter.maintenance.settings import MaintenanceSettings, tag_matches

if TYPE_CHECKING:
    from workspace_adapter.maintenance.patches import SeriesRebuild

LOCK_NAME = "workspace-maintenance.lock"
RANGE_DIFF_LIMIT = 64 * 1024
DEFAULT_IDENTITY = {"user.name": "workspace-adapter", "user.email": "workspace-adapter@localhost"}


class ForkMaintenance:
    """One maintenance run of one fork for one release event; :meth:`run` returns its result."""

    def __init__(
        self,
        settings: MaintenanceSettings,
        event: Mapping[str, Any],
        emit: Callable[[str], None] = lambda _line: None,
        env: Mapping[str, str] | None = None,
        verbose: bool | None = None,
    ) -> None:
        """``verbose`` None: as ``CODEX_FLOW_VERBOSE`` in ``env`` (default: ours) says."""
        self.settings = settings
        self.event = dict(event)
        payload = self.event.get("payload")
        self.payload: dict[str, Any] = payload if isinstance(payload, dict) else {}
        env = os.environ if env is None else env
        self.progress = Progress(emit, verbose_from(env) if verbose is None else verbose)
        self.log = CommandLog(self.progress.detail, env)
        self.git = Git(settings.fork_path, self.log)
        # What the run learned so far; reported whatever the outcome.
        self.tag: str | None = None
        self.release_sha: str | None = None
        self.before_sha: str | None = None
        self.after_sha: str | None = None
        self.checks: list[dict[str, Any]] = []
        self.candidate_refs: list[dict[str, Any]] = []
        self.range_diff: str | None = None
        self.pushed = False
        self._leases: dict[str, str | None] = {}
        # The branch's sha before a rebase that its checks have not yet verified, if any.
        self._unverified_base: str | None = None
        self._restore_problem: str | None = None
        self._reverted: str | None = None
        self._identity_flags: list[str] | None = None
        self.series: SeriesRebuild | None = None
        if settings.patches is not None:
            # Only a fork kept as a patch series loads that machinery (work trees, conflict
            # reading): a few ms of every other maintenance step's start.
            from workspace_adapter.maintenance.patches import SeriesRebuild

            self.series = SeriesRebuild(
                self.git, settings, settings.patches, self.progress, self._identity
            )

    def run(self) -> FlowResult:
        started = time.perf_counter()
        status: Status
        try:
            status, message = self._maintain()
        except Outcome as outcome:
            status, message = outcome.status, outcome.message
        except Exception as exc:
            where = log_traceback(self.settings.workspace_root, exc)
            status, message = (
                Status.FAILED,
                one_line(f"unexpected {type(exc).__name__}: {exc}") + where,
            )
        if self._reverted:
            message = f"{message}; {self._reverted}"
        if self._restore_problem:
            status = (
                Status.BLOCKED
                if status_rule.worst([status, Status.BLOCKED]) == Status.BLOCKED
                else status
            )
            message = f"{message}; {self._restore_problem}"
        total = time.perf_counter() - started
        return FlowResult(status=status, message=message, artifacts=self._artifacts(total))

    def _artifacts(self, total: float) -> dict[str, Any]:
        s = self.settings
        return {
            "eventId": self.event.get("id"),
            "repo": self.payload.get("repo"),
            "forkRepo": s.fork_repo,
            "forkRepoFullName": s.fork_repo_full_name,
            "targetBranch": s.target_branch,
            "releaseTag": self.tag,
            "releaseSha": self.release_sha,
            "beforeSha": self.before_sha,
            "afterSha": self.after_sha,
            "pushed": self.pushed,
            "checks": self.checks,
            "candidateRefs": self.candidate_refs,
            "rangeDiff": self.range_diff,
            "commands": self.log.as_artifacts(),
            "timing": {
                "totalSeconds": round(total, 4),
                "commandSeconds": round(self.log.seconds, 4),
            },
        } | ({"patches": self.series.as_artifacts()} if self.series else {})

    # -- the run ------------------------------------------------------------------------------

    def _maintain(self) -> tuple[Status, str]:
        self.tag = self._release_tag()
        require_own_repository(self.git, self.settings)
        with self._fork_lock():
            return self._maintain_locked(self.tag)

    def _release_tag(self) -> str:
        """Rule 1: the event must be about our upstream and name a tag."""
        s = self.settings
        repo = self.payload.get("repo")
        named = self.payload.get("fork")
        if s.fork_name is not None and named is not None and named != s.fork_name:
            raise Outcome(
                Status.SKIPPED, f"event is for fork {named!r}; this run maintains {s.fork_name!r}"
            )
        # An event that names its fork may leave the repo out; one that says it must agree.
        by_name = s.fork_name is not None and named == s.fork_name and repo is None
        if not by_name and repo != s.expected_repo:
            raise Outcome(
                Status.SKIPPED,
                f"event is for repo {repo!r}; this flow maintains {s.expected_repo!r}",
            )
        tag = self.payload.get("tag")
        if not isinstance(tag, str) or not tag.strip():
            ref = self.payload.get("ref")
            tag = ref.removeprefix("refs/tags/") if isinstance(ref, str) else None
        if not tag or not tag.strip():
            raise Outcome(
                Status.FAILED,
                'event payload has neither `tag` nor `ref`; send the release tag, e.g. "tag": '
                '"v0.1.4"',
            )
        tag = tag.strip()
        if s.release_tags is not None and not tag_matches(s.release_tags, tag):
            raise Outcome(
                Status.SKIPPED,
                f"tag {tag!r} is not a release tag of fork {s.fork_name or s.fork_repo} "
                f"(release_tags = {s.release_tags!r})",
            )
        cwd = s.workspace_root if s.workspace_root.is_dir() else Path.cwd()
        if not self.log.run(["git", "check-ref-format", f"refs/tags/{tag}"], cwd).ok:
            raise Outcome(Status.FAILED, f"event payload.tag {tag!r} is not a valid git tag name")
        return tag

    @contextlib.contextmanager
    def _fork_lock(self) -> Iterator[None]:
        """One run per fork: a flock held on a file in the fork's git dir for the whole run."""
        path = self.git.common_dir() / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Outcome(
                    Status.BLOCKED,
                    f"fork busy: another maintenance run holds {path}; re-run when it ends",
                ) from None
            yield
        finally:
            os.close(fd)

    def _maintain_locked(self, tag: str) -> tuple[Status, str]:
        s = self.settings
        remotes = ensure_remotes(self.git, s, self.progress.say)
        self._refuse_unsafe_state()
        if s.fetch:
            with self.progress.phase("fetch") as phase:
                fetched = fetch_for_lease(self.git, s, remotes, self.progress.say)
                also = f"; {s.target_branch} from {', '.join(fetched)}" if fetched else ""
                phase.summary = f"tags from {s.upstream_remote}{also}"
        else:
            self.progress.done("fetch", "off (fetch = false): using the tags the fork has")
        self._leases = leases(self.git, s)
        release = self.git.resolve_commit(f"refs/tags/{tag}")
        if release is None:
            where = f"after fetching {s.upstream_remote}" if s.fetch else "and fetch is off"
            raise Outcome(
                Status.BLOCKED,
                f"tag {tag} is not known in {s.fork_repo} {where}; check the tag name"
                + ("" if s.fetch else " or run with fetch on"),
            )
        self.release_sha = release
        found = found_checkout(self.git)
        try:
            before = found.sha
            if found.branch != s.target_branch:
                self._switch_to_target()
                before = self.git.head_sha()
            return self._update_branch(tag, release, before)
        finally:
            self._leave(found)

    def _refuse_unsafe_state(self) -> None:
        """Rule 4: nothing half-done, nothing uncommitted."""
        s = self.settings
        operation = self.git.operation_in_progress()
        if operation:
            raise Outcome(
                Status.BLOCKED,
                f"a {operation} is in progress in {s.fork_repo}; finish it or run "
                f"`git {operation} --abort` there, then re-run",
            )
        dirty = self.git.status_lines()
        if dirty:
            raise Outcome(
                Status.BLOCKED,
                f"{s.fork_repo} has uncommitted changes ({len(dirty)} paths, first "
                f"{dirty[0][3:]!r}); commit or stash them, then re-run",
            )

    def _switch_to_target(self) -> None:
        s = self.settings
        if self.git.ref_sha(f"refs/heads/{s.target_branch}") is None:
            raise Outcome(
                Status.BLOCKED,
                f"branch {s.target_branch} does not exist in {s.fork_repo}; create it or fix "
                "`target_branch`",
            )
        done = self.git.switch(s.target_branch)
        if not done.ok:
            raise Outcome(
                Status.BLOCKED,
                f"cannot switch {s.fork_repo} to {s.target_branch}: {done.last_line()}",
            )

    def _leave(self, found: FoundCheckout) -> None:
        """Put the checkout back as it was found, whatever happened before."""
        try:
            self._put_back(found)
        except BaseException:
            # A SIGTERM landed mid-way; the step ignores any further one, so this second,
            # complete attempt runs to its end before the signal ends the run.
            self._put_back(found)
            raise

    def _put_back(self, found: FoundCheckout) -> None:
        try:
            abort_rebase(self.git)
            self._drop_unverified()
            self._set_aside()
            problem = switch_back(self.git, found)
            if problem:
                self._restore_problem = problem
        except Exception as exc:
            self._restore_problem = one_line(f"could not restore the checkout: {exc}")

    def _drop_unverified(self) -> None:
        """An interrupted run must not leave an unverified rebase on the branch."""
        before = self._unverified_base
        if before is None or self.tag is None:
            return
        head = self.git.head_sha()
        if head != before:
            self._keep_candidate(self.tag, before, head)
        self._unverified_base = None

    def _update_branch(self, tag: str, release: str, before: str) -> tuple[Status, str]:
        """Rules 6-10 on the target branch, whose head is ``before``."""
        s = self.settings
        self.before_sha = self.after_sha = before
        if self.series is not None:
            rebased, what = self.series.rebuild(tag, release, before)
            if rebased and self.series.head is not None:
                self._unverified_base = before
                moved = self.git("reset", "--hard", "--quiet", self.series.head)
                self.after_sha = self.git.head_sha()
                if not moved.ok:
                    raise Outcome(
                        Status.BLOCKED,
                        f"cannot move {s.target_branch} to the rebuilt commit "
                        f"{short(self.series.head)}: {moved.last_line()}",
                    )
        else:
            rebased, what = self._rebase_phase(tag, release, before)
        checks = list(s.verify_commands)
        self.checks, failed = run_checks(self.log, self.progress, s.fork_path, checks)
        if failed is not None:
            command, code = failed
            kept = self._keep_candidate(tag, before, self.after_sha) if rebased else ""
            return (
                Status.NEEDS_INTERVENTION,
                f"{what}, but check `{command}` failed (exit {code}){kept}",
            )
        dirty = self.git.status_lines()
        if dirty:
            kept = self._keep_candidate(tag, before, self.after_sha) if rebased else ""
            raise Outcome(
                Status.BLOCKED,
                f"{what}; checks passed but left the tree dirty ({len(dirty)} paths, first "
                f"{dirty[0][3:]!r}){kept}; nothing pushed; make the checks leave the tree clean",
            )
        self._unverified_base = None
        pushed = self._push()
        status: Status = Status.CHANGED if rebased else Status.COMPLETED
        return status, f"{what}; checks passed; {pushed}"

    def _rebase_phase(self, tag: str, release: str, before: str) -> tuple[bool, str]:
        """Rule 6: rebase onto the release unless the branch has it; (rebased, what was done)."""
        s = self.settings
        with self.progress.phase("rebase") as phase:
            rebased = not self.git.is_ancestor(release, before)
            if rebased:
                self._unverified_base = before
                old_base = self.git.merge_base(before, release)
                after = self._rebase(tag, release, before, phase)
                self.after_sha = after
                if old_base:
                    self._range_diff(f"{old_base}..{before}", f"{release}..{after}")
                count = self.git.count_commits(f"{release}..{after}")
                what = (
                    f"rebased {count} fork commits of {s.target_branch} onto {tag} "
                    f"({short(release)}): {short(before)} -> {short(after)}"
                )
                phase.summary = what.removeprefix("rebased ")
            else:
                what = f"{s.fork_repo} {s.target_branch} already contains {tag} ({short(release)})"
                phase.summary = f"{s.target_branch} already contains {tag}; nothing to rebase"
        return rebased, what

    def _set_aside(self) -> None:
        stashed = revert_leftovers(self.git, self._stash_label(), self._identity)
        self._reverted = stashed or self._reverted

    def _stash_label(self) -> str:
        tag = self.tag or "an unknown tag"
        return f"workspace-adapter: left by the run for {tag} ({self.event.get('id')})"

    def _identity(self) -> list[str]:
        """``-c`` settings for a default committer, for the keys the fork leaves unset."""
        if self._identity_flags is None:
            self._identity_flags = [
                f"{key}={value}"
                for key, value in DEFAULT_IDENTITY.items()
                if self.git.config_value(key) is None
            ]
        return self._identity_flags

    def _rebase(self, tag: str, release: str, before: str, phase: Phase) -> str:
        """Rule 6: rebase onto the release; a rebase that stops is aborted, never left behind."""
        s = self.settings
        done = self.git("rebase", release, config=self._identity())
        if done.ok:
            return self.git.head_sha()
        if self.git.operation_in_progress() != "rebase":
            raise Outcome(
                Status.BLOCKED, f"git rebase onto {tag} did not start: {done.last_line()}"
            )
        files = self.git.unmerged_files()
        stopped = self.git.ref_sha("REBASE_HEAD")
        subject = self.git.subject(stopped) if stopped else ""
        abort = self.git("rebase", "--abort")
        if not abort.ok or self.git.head_sha() != before:
            raise Outcome(
                Status.BLOCKED,
                f"rebase onto {tag} stopped and could not be aborted ({abort.last_line()}); "
                f"run `git rebase --abort` in {s.fork_repo}",
            )
        self._unverified_base = None  # the abort put the branch back at ``before``
        where = f"conflicts in {', '.join(files)}" if files else done.last_line()
        phase.summary = f"{tag}: stopped at {short(stopped)} {subject!r}, {where}; aborted"
        return_to = f"the rebase was aborted and {s.fork_repo} left at {short(before)}"
        raise Outcome(
            Status.NEEDS_INTERVENTION,
            f"rebasing {s.target_branch} onto {tag} stopped at fork commit {short(stopped)} "
            f"{subject!r}: {where}; {return_to}",
        )

    def _range_diff(self, old: str, new: str) -> None:
        done = self.git("range-diff", "--no-color", old, new)
        if done.ok:
            text = done.stdout
            self.range_diff = text if len(text) <= RANGE_DIFF_LIMIT else text[:RANGE_DIFF_LIMIT]

    def _keep_candidate(self, tag: str, before: str, rebased: str) -> str:
        """Keep the unverified rebase as a candidate ref and put the branch back at ``before``."""
        # The reset below is --hard: whatever the checks changed goes to the stash first.
        self._set_aside()
        ref = self.series.rebuilt_ref(tag) if self.series else None
        entry, clause = keep_candidate(self.git, self.settings, tag, rebased, before, ref)
        self._unverified_base = None
        self.after_sha = before
        self.candidate_refs = ([entry] if entry else []) + self._series_refs(set())
        return clause

    def _series_refs(self, pushed: set[str]) -> list[dict[str, Any]]:
        return self.series.candidate_refs(pushed) if self.series else []

    def _push(self) -> str:
        """Rule 9: publish only when push is on; report which remotes got the branch."""
        s = self.settings
        pushed: set[str] = set()
        with self.progress.phase("publish") as phase:
            try:
                if s.push and self.series is not None:
                    series = self.series
                    push_atomic(self.git, s, self._leases, series.pushes, series.leases, pushed)
                elif s.push:
                    push_with_lease(self.git, s, self._leases, pushed)
            finally:
                self.candidate_refs = branch_refs(s, self.after_sha, pushed)
                self.candidate_refs += self._series_refs(pushed)
                self.pushed = bool(pushed)
            said = f"pushed to {', '.join(s.push_remotes)}" if s.push else "push is off"
            refs = [f"{r['remote']} {r['ref']} {short(r['sha'])}" for r in self.candidate_refs]
            phase.summary = "; ".join([said, *refs])
        return said
