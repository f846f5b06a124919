"""Rules 7 and 9 of the engine: run the fork's checks, keep or push what they verified."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workspace_adapter.base.status import Status
from workspace_adapter.maintenance.git import CommandLog, Completed, Git
from workspace_adapter.maintenance.outcome import Outcome, short
from workspace_adapter.maintenance.progress import Progress
from workspace_adapter.maintenance.settings import MaintenanceSettings

# npm would otherwise ask the registry whether it is outdated on every call.
CHECK_ENV = {"npm_config_update_notifier": "false"}
CANDIDATE_PREFIX = "refs/workspace/candidates/"


def run_checks(
    log: CommandLog, progress: Progress, fork: Path, commands: list[str]
) -> tuple[list[dict[str, Any]], tuple[str, int] | None]:
    """Each command through ``bash -c`` (not ``-lc``: a login shell resets PATH), streamed.

    One line per check; a failed check's output tail follows its line. Returns the checks as
    reported, and the first failing command with its exit code; the commands after a failure
    are reported as skipped.
    """
    checks: list[dict[str, Any]] = []
    for i, command in enumerate(commands):
        code, seconds = log.stream(["bash", "-c", command], fork, CHECK_ENV)
        status = "passed" if code == 0 else Status.FAILED
        checks.append({"name": command, "status": status, "seconds": round(seconds, 4)})
        said = "passed" if code == 0 else f"failed (exit {code})"
        progress.done("check", f"{command}: {said}", seconds)
        if code != 0:
            progress.tail(log.records[-1].stdout)
            checks += [
                {"name": rest, "status": Status.SKIPPED, "seconds": 0.0}
                for rest in commands[i + 1 :]
            ]
            return checks, (command, code)
    return checks, None


def keep_candidate(
    git: Git,
    settings: MaintenanceSettings,
    tag: str,
    rebased: str,
    before: str,
    ref: str | None = None,
) -> tuple[dict[str, Any] | None, str]:
    """Rule 7: keep an unverified rebase as ``refs/workspace/candidates/<tag>``, reset the branch.

    ``ref`` names another place (a rebuilt patch series keeps it as ``<tag>/rebuilt``). The
    branch goes back to ``before`` even when the ref cannot be written (the commit then stays in
    HEAD's reflog, and the message says so). Returns the candidate ref entry, or None when there
    is none, and the clause the result message ends with.
    """
    branch = settings.target_branch
    ref = ref or CANDIDATE_PREFIX + tag
    kept = git("update-ref", ref, rebased)
    where = (
        f"as {ref} ({short(rebased)})"
        if kept.ok
        else f"only in the reflog as {short(rebased)} (cannot write {ref}: {kept.last_line()})"
    )
    reset = git("reset", "--hard", "--quiet", before)
    if not reset.ok:
        raise Outcome(
            Status.BLOCKED,
            f"could not reset {branch} to {short(before)}: {reset.last_line()}; the rebased "
            f"commit is kept {where}",
        )
    entry = {
        "kind": "candidate",
        "repo": settings.fork_repo_full_name,
        "remote": "local",
        "ref": ref,
        "sha": rebased,
        "pushed": False,
    }
    return (entry if kept.ok else None), (
        f"; the rebased commit is kept {where} and {branch} reset to {short(before)}"
    )


def branch_refs(
    settings: MaintenanceSettings, sha: str | None, pushed: set[str]
) -> list[dict[str, Any]]:
    """``candidateRefs``: one per push remote, or one ``local`` entry when push is off."""
    remotes = list(settings.push_remotes) if settings.push else ["local"]
    return [
        {
            "kind": "branch",
            "repo": settings.fork_repo_full_name,
            "remote": remote,
            "ref": f"refs/heads/{settings.target_branch}",
            "sha": sha,
            "pushed": remote in pushed,
        }
        for remote in remotes
    ]


def push_with_lease(
    git: Git, settings: MaintenanceSettings, leases: dict[str, str | None], pushed: set[str]
) -> None:
    """Push HEAD to every push remote, each leased on its last fetched sha; fills ``pushed``.

    A dry run checks every lease first, so one moved remote does not leave the others
    half-published; the real pushes still carry the lease for a remote that moves meanwhile.
    """
    branch = f"refs/heads/{settings.target_branch}"

    def push(remote: str, *flags: str) -> Completed:
        lease = f"--force-with-lease={branch}:{leases.get(remote) or ''}"
        return git("push", *flags, lease, remote, f"HEAD:{branch}")

    for remote in settings.push_remotes:
        _refused(settings, remote, push(remote, "--dry-run"), leases, pushed)
    for remote in settings.push_remotes:
        _refused(settings, remote, push(remote), leases, pushed)
        pushed.add(remote)


def push_atomic(
    git: Git,
    settings: MaintenanceSettings,
    leases: dict[str, str | None],
    extra: list[tuple[str, str]],
    extra_leases: dict[str, dict[str, str | None]],
    pushed: set[str],
) -> None:
    """Push HEAD and each ``(sha, ref)`` of ``extra`` to every push remote, all or none.

    One ``git push --atomic`` per remote, every ref leased on the value read at the start of
    the run (``leases`` for the branch, ``extra_leases[remote][ref]`` for the others; None: the
    ref must not exist there). A dry run of every remote goes first, as for a single branch.
    """
    branch = f"refs/heads/{settings.target_branch}"

    def push(remote: str, *flags: str) -> Completed:
        expected = {branch: leases.get(remote)} | {
            ref: extra_leases.get(remote, {}).get(ref) for _, ref in extra
        }
        lease = [f"--force-with-lease={ref}:{sha or ''}" for ref, sha in expected.items()]
        specs = [f"HEAD:{branch}", *(f"{sha}:{ref}" for sha, ref in extra)]
        return git("push", "--atomic", "--porcelain", *flags, *lease, remote, *specs)

    for remote in settings.push_remotes:
        _refused_atomic(remote, push(remote, "--dry-run"), pushed)
    for remote in settings.push_remotes:
        _refused_atomic(remote, push(remote), pushed)
        pushed.add(remote)


def _refused_atomic(remote: str, done: Completed, pushed: set[str]) -> None:
    if done.ok:
        return
    so_far = f"; already pushed to {', '.join(sorted(pushed))}" if pushed else ""
    moved = [
        line.split("\t")[1].split(":", 1)[-1]
        for line in done.stdout.splitlines()
        if line.startswith("!") and "stale info" in line and "\t" in line
    ]
    if moved or "stale info" in done.stderr:
        refs = ", ".join(moved) or "a ref"
        raise Outcome(
            Status.BLOCKED,
            f"remote moved: {remote}'s {refs} changed since the run read it; nothing "
            f"overwritten there (the push is atomic){so_far}; fetch, review and re-run",
        )
    raise Outcome(Status.BLOCKED, f"push to {remote} failed: {done.last_line()}{so_far}")


def _refused(
    settings: MaintenanceSettings,
    remote: str,
    done: Completed,
    leases: dict[str, str | None],
    pushed: set[str],
) -> None:
    if done.ok:
        return
    so_far = f"; already pushed to {', '.join(sorted(pushed))}" if pushed else ""
    if "stale info" in done.stderr:
        expected = leases.get(remote)
        was = f"at {short(expected)}" if expected else "absent"
        raise Outcome(
            Status.BLOCKED,
            f"remote moved: {remote}'s {settings.target_branch} was {was} at the last fetch and "
            f"has changed since; nothing overwritten{so_far}; fetch, review and re-run",
        )
    raise Outcome(Status.BLOCKED, f"push to {remote} failed: {done.last_line()}{so_far}")


def patch_leases(
    git: Git, settings: MaintenanceSettings, branches: list[str]
) -> dict[str, dict[str, str | None]]:
    """Each push remote's ``branches`` as they are now (None: absent), what a push may replace.

    With fetch on they are read from the remote itself; with fetch off, from the fork's
    remote-tracking refs, as the maintained branch's lease is.
    """
    leases: dict[str, dict[str, str | None]] = {}
    for remote in settings.push_remotes:
        found: dict[str, str] = {}
        if settings.fetch:
            listed = git("ls-remote", "--heads", remote)
            if not listed.ok:
                raise Outcome(
                    Status.BLOCKED, f"listing {remote}'s branches failed: {listed.last_line()}"
                )
            for line in listed.stdout.splitlines():
                sha, _, ref = line.partition("\t")
                found[ref.strip()] = sha.strip()
        else:
            for name in branches:
                tracked = git.ref_sha(f"refs/remotes/{remote}/{name}")
                if tracked:
                    found[f"refs/heads/{name}"] = tracked
        leases[remote] = {f"refs/heads/{n}": found.get(f"refs/heads/{n}") for n in branches}
    return leases
