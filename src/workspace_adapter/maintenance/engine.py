"""ForkMaintenance: rebase a fork's branch onto an upstream release, verify it, publish it.

The rules are SPEC §7, numbered 1-10 in the comments below. The engine never leaves the fork
half-way: a stopped rebase is aborted, a failed check puts the branch back, and the branch the
checkout was on is restored whatever happens.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from workspace_adapter.events import FlowResult, FlowStatus, worst_status
from workspace_adapter.maintenance.git import CommandLog, Git
from workspace_adapter.maintenance.outcome import Outcome, one_line, short
from workspace_adapter.maintenance.publish import branch_refs, push_with_lease, run_checks
from workspace_adapter.maintenance.settings import MaintenanceSettings

LOCK_NAME = "workspace-maintenance.lock"
CANDIDATE_PREFIX = "refs/workspace/candidates/"
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
    ) -> None:
        self.settings = settings
        self.event = dict(event)
        payload = self.event.get("payload")
        self.payload: dict[str, Any] = payload if isinstance(payload, dict) else {}
        self.emit = emit
        self.log = CommandLog(emit, os.environ if env is None else env)
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
        self._restore_problem: str | None = None

    def run(self) -> FlowResult:
        started = time.perf_counter()
        status: FlowStatus
        try:
            status, message = self._maintain()
        except Outcome as outcome:
            status, message = outcome.status, outcome.message
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            status, message = "failed", one_line(f"unexpected {type(exc).__name__}: {exc}")
        if self._restore_problem:
            status = "blocked" if worst_status([status, "blocked"]) == "blocked" else status
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
        }

    # -- the run ------------------------------------------------------------------------------

    def _maintain(self) -> tuple[FlowStatus, str]:
        self.tag = self._release_tag()
        self._require_own_repository()
        with self._fork_lock():
            return self._maintain_locked(self.tag)

    def _release_tag(self) -> str:
        """Rule 1: the event must be about our upstream and name a tag."""
        s = self.settings
        repo = self.payload.get("repo")
        if repo != s.expected_repo:
            raise Outcome(
                "skipped", f"event is for repo {repo!r}; this flow maintains {s.expected_repo!r}"
            )
        tag = self.payload.get("tag")
        if not isinstance(tag, str) or not tag.strip():
            ref = self.payload.get("ref")
            tag = ref.removeprefix("refs/tags/") if isinstance(ref, str) else None
        if not tag or not tag.strip():
            raise Outcome(
                "failed",
                'event payload has neither `tag` nor `ref`; send the release tag, e.g. "tag": '
                '"v0.1.4"',
            )
        tag = tag.strip()
        cwd = s.workspace_root if s.workspace_root.is_dir() else Path.cwd()
        if not self.log.run(["git", "check-ref-format", f"refs/tags/{tag}"], cwd).ok:
            raise Outcome("failed", f"event payload.tag {tag!r} is not a valid git tag name")
        return tag

    def _require_own_repository(self) -> None:
        """Rule 2: the fork checkout exists and is a repository of its own."""
        s = self.settings
        if not s.fork_path.is_dir():
            raise Outcome(
                "blocked",
                f"fork checkout {s.fork_repo} does not exist ({s.fork_path}); clone the fork "
                "there or run `workspace harness init`",
            )
        done = self.git("rev-parse", "--show-toplevel")
        if not done.ok:
            raise Outcome(
                "blocked",
                f"fork checkout {s.fork_repo} is not a git repository ({done.last_line()}); "
                "clone the fork there",
            )
        top = Path(done.stdout.strip())
        if top.resolve() != s.fork_path.resolve():
            raise Outcome(
                "blocked",
                f"fork checkout {s.fork_repo} is not its own repository: it is a folder inside "
                f"{top}; clone the fork into {s.fork_repo}",
            )

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
                    "blocked",
                    f"fork busy: another maintenance run holds {path}; re-run when it ends",
                ) from None
            yield
        finally:
            os.close(fd)

    def _maintain_locked(self, tag: str) -> tuple[FlowStatus, str]:
        s = self.settings
        self._ensure_remotes()
        self._refuse_unsafe_state()
        if s.fetch:
            self._fetch()
        self._leases = {
            remote: self.git.ref_sha(f"refs/remotes/{remote}/{s.target_branch}")
            for remote in s.push_remotes
        }
        release = self.git.resolve_commit(f"refs/tags/{tag}")
        if release is None:
            where = f"after fetching {s.upstream_remote}" if s.fetch else "and fetch is off"
            raise Outcome(
                "blocked",
                f"tag {tag} is not known in {s.fork_repo} {where}; check the tag name"
                + ("" if s.fetch else " or run with fetch on"),
            )
        self.release_sha = release
        original_branch = self.git.current_branch()
        original_sha = self.git.head_sha()
        try:
            if original_branch != s.target_branch:
                self._switch_to_target()
            return self._update_branch(tag, release)
        finally:
            self._leave(original_branch, original_sha)

    def _ensure_remotes(self) -> None:
        """Rule 3, first half: add the upstream remote when missing, never a push remote."""
        s = self.settings
        remotes = self.git.remotes()
        if s.upstream_remote not in remotes:
            done = self.git.add_remote(s.upstream_remote, s.upstream_repo_url)
            if not done.ok:
                raise Outcome(
                    "blocked",
                    f"cannot add remote {s.upstream_remote} to {s.fork_repo}: {done.last_line()}",
                )
            self.emit(f"added remote {s.upstream_remote} -> {s.upstream_repo_url}")
        missing = [r for r in s.push_remotes if r not in remotes]
        if missing and s.push:
            raise Outcome(
                "blocked",
                f"push remote {', '.join(missing)} is not configured in {s.fork_repo}; add it "
                "with `git remote add NAME URL` (the flow never invents push remotes)",
            )

    def _refuse_unsafe_state(self) -> None:
        """Rule 4: nothing half-done, nothing uncommitted."""
        s = self.settings
        operation = self.git.operation_in_progress()
        if operation:
            raise Outcome(
                "blocked",
                f"a {operation} is in progress in {s.fork_repo}; finish it or run "
                f"`git {operation} --abort` there, then re-run",
            )
        dirty = self.git.status_lines()
        if dirty:
            raise Outcome(
                "blocked",
                f"{s.fork_repo} has uncommitted changes ({len(dirty)} paths, first "
                f"{dirty[0][3:]!r}); commit or stash them, then re-run",
            )

    def _fetch(self) -> None:
        """Rule 3, second half: upstream tags, and the branch each lease will be checked on."""
        s = self.settings
        done = self.git("fetch", "--tags", s.upstream_remote)
        if not done.ok:
            raise Outcome(
                "blocked", f"fetching tags from {s.upstream_remote} failed: {done.last_line()}"
            )
        present = set(self.git.remotes())
        for remote in s.push_remotes:
            if remote not in present:
                self.emit(f"push remote {remote} is not configured; not fetching it")
                continue
            tracking = f"refs/remotes/{remote}/{s.target_branch}"
            done = self.git("fetch", remote, f"+refs/heads/{s.target_branch}:{tracking}")
            if done.ok:
                continue
            if "couldn't find remote ref" in done.stderr:
                # The branch is gone remotely: the lease must then say "must not exist".
                self.git("update-ref", "-d", tracking)
                continue
            raise Outcome("blocked", f"fetching {remote} failed: {done.last_line()}")

    def _switch_to_target(self) -> None:
        s = self.settings
        if self.git.ref_sha(f"refs/heads/{s.target_branch}") is None:
            raise Outcome(
                "blocked",
                f"branch {s.target_branch} does not exist in {s.fork_repo}; create it or fix "
                "`target_branch`",
            )
        done = self.git.switch(s.target_branch)
        if not done.ok:
            raise Outcome(
                "blocked", f"cannot switch {s.fork_repo} to {s.target_branch}: {done.last_line()}"
            )

    def _leave(self, original_branch: str | None, original_sha: str) -> None:
        """Put the checkout back on the branch (or detached commit) it was found on."""
        try:
            if self.git.operation_in_progress() == "rebase":
                self.git("rebase", "--abort")
            if original_branch is not None:
                if self.git.current_branch() == original_branch:
                    return
                done = self.git.switch(original_branch)
            else:
                if self.git.current_branch() is None and self.git.head_sha() == original_sha:
                    return
                done = self.git.switch_detached(original_sha)
            if not done.ok:
                self._restore_problem = (
                    f"could not switch back to {original_branch or original_sha}: "
                    f"{done.last_line()}"
                )
        except Exception as exc:
            self._restore_problem = one_line(f"could not restore the checkout: {exc}")

    def _update_branch(self, tag: str, release: str) -> tuple[FlowStatus, str]:
        """Rules 6-10 on the target branch."""
        s = self.settings
        before = self.git.head_sha()
        self.before_sha = self.after_sha = before
        rebased = not self.git.is_ancestor(release, before)
        if rebased:
            old_base = self.git.merge_base(before, release)
            after = self._rebase(tag, release, before)
            self.after_sha = after
            if old_base:
                self._range_diff(f"{old_base}..{before}", f"{release}..{after}")
            count = self.git.count_commits(f"{release}..{after}")
            what = (
                f"rebased {count} fork commits of {s.target_branch} onto {tag} "
                f"({short(release)}): {short(before)} -> {short(after)}"
            )
        else:
            self.emit(f"{s.target_branch} already contains {tag}; no rebase needed")
            what = f"{s.fork_repo} {s.target_branch} already contains {tag} ({short(release)})"
        try:
            self.checks, failed = run_checks(self.log, s.fork_path, list(s.verify_commands))
        except BaseException:
            # Interrupted mid-check: an unverified rebase must not stay on the branch.
            if rebased:
                self._keep_candidate(tag, before)
            raise
        if failed is not None:
            command, code = failed
            kept = self._keep_candidate(tag, before) if rebased else ""
            return "needs_intervention", f"{what}, but check `{command}` failed (exit {code}){kept}"
        dirty = self.git.status_lines()
        if dirty:
            kept = self._keep_candidate(tag, before) if rebased else ""
            raise Outcome(
                "blocked",
                f"{what}; checks passed but left the tree dirty ({len(dirty)} paths, first "
                f"{dirty[0][3:]!r}){kept}; nothing pushed, clean up and re-run",
            )
        pushed = self._push()
        status: FlowStatus = "changed" if rebased else "completed"
        return status, f"{what}; checks passed; {pushed}"

    def _rebase(self, tag: str, release: str, before: str) -> str:
        """Rule 6: rebase onto the release; a rebase that stops is aborted, never left behind."""
        s = self.settings
        identity = [
            f"{key}={value}"
            for key, value in DEFAULT_IDENTITY.items()
            if self.git.config_value(key) is None
        ]
        done = self.git("rebase", release, config=identity)
        if done.ok:
            return self.git.head_sha()
        if self.git.operation_in_progress() != "rebase":
            raise Outcome("blocked", f"git rebase onto {tag} did not start: {done.last_line()}")
        files = self.git.unmerged_files()
        stopped = self.git.ref_sha("REBASE_HEAD")
        subject = self.git.subject(stopped) if stopped else ""
        abort = self.git("rebase", "--abort")
        if not abort.ok or self.git.head_sha() != before:
            raise Outcome(
                "blocked",
                f"rebase onto {tag} stopped and could not be aborted ({abort.last_line()}); "
                f"run `git rebase --abort` in {s.fork_repo}",
            )
        where = f"conflicts in {', '.join(files)}" if files else done.last_line()
        return_to = f"the rebase was aborted and {s.fork_repo} left at {short(before)}"
        raise Outcome(
            "needs_intervention",
            f"rebasing {s.target_branch} onto {tag} stopped at fork commit {short(stopped)} "
            f"{subject!r}: {where}; {return_to}",
        )

    def _range_diff(self, old: str, new: str) -> None:
        done = self.git("range-diff", "--no-color", old, new)
        if done.ok:
            text = done.stdout
            self.range_diff = text if len(text) <= RANGE_DIFF_LIMIT else text[:RANGE_DIFF_LIMIT]

    def _keep_candidate(self, tag: str, before: str) -> str:
        """Keep the rebased commit as a candidate ref and put the branch back where it was."""
        s = self.settings
        rebased = self.after_sha
        assert rebased is not None
        ref = CANDIDATE_PREFIX + tag
        self.git("update-ref", ref, rebased)
        reset = self.git("reset", "--hard", "--quiet", before)
        if not reset.ok:
            raise Outcome(
                "blocked",
                f"could not reset {s.target_branch} to {short(before)}: {reset.last_line()}; "
                f"the rebased commit is kept as {ref}",
            )
        self.after_sha = before
        self.candidate_refs = [
            {
                "kind": "candidate",
                "repo": s.fork_repo_full_name,
                "remote": "local",
                "ref": ref,
                "sha": rebased,
                "pushed": False,
            }
        ]
        return (
            f"; the rebased commit is kept as {ref} ({short(rebased)}) and "
            f"{s.target_branch} reset to {short(before)}"
        )

    def _push(self) -> str:
        """Rule 9: publish only when push is on; report which remotes got the branch."""
        s = self.settings
        pushed: set[str] = set()
        try:
            if s.push:
                push_with_lease(self.git, s, self._leases, pushed)
        finally:
            self.candidate_refs = branch_refs(s, self.after_sha, pushed)
            self.pushed = bool(pushed)
        return f"pushed to {', '.join(s.push_remotes)}" if s.push else "push is off"
