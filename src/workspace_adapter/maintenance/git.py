"""git behind small named questions, run in other people's environments.

Modelled on pre-commit's ``git.py``: one short function per question, and :func:`no_git_env`
so that ``GIT_DIR``/``GIT_WORK_TREE`` leaked by a hook or a parent git process never point our
commands at the wrong repository. Every command goes through a :class:`CommandLog`, which keeps
its argv, exit code, duration and bounded output for the flow result.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from workspace_adapter.base.gitenv import no_git_env
from workspace_adapter.base.redact import redact_urls
from workspace_adapter.base.tails import OutputTail

OUTPUT_LIMIT = 4000
"""How much of each command's output its record in ``artifacts.commands`` keeps: the end."""


def _tail(text: str, limit: int = OUTPUT_LIMIT) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


class CommandRecord(msgspec.Struct, kw_only=True):
    """One command the flow ran, as kept in ``artifacts.commands``."""

    argv: list[str]
    exitCode: int
    seconds: float
    stdout: str = ""
    stderr: str = ""


class Completed(msgspec.Struct, kw_only=True):
    """The outcome of one command: exit code and full (unbounded) output."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def last_line(self) -> str:
        """The last non-empty line of stderr (else stdout): git's reason for a failure."""
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return redact_urls(lines[-1])
        return f"exit code {self.exit_code}"


class CommandLog:
    """Runs commands, announces each on ``emit`` and records it with its duration."""

    def __init__(self, emit: Callable[[str], None], base_env: Mapping[str, str]) -> None:
        self.emit = emit
        self.base_env = dict(base_env)
        self.records: list[CommandRecord] = []

    @property
    def seconds(self) -> float:
        """Time spent inside commands, to tell our own overhead apart from git's and npm's."""
        return sum(r.seconds for r in self.records)

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = no_git_env(self.base_env)
        if extra:
            env.update(extra)
        return env

    def run(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None
    ) -> Completed:
        """Run ``argv`` to completion, capturing its output."""
        shown = [redact_urls(a) for a in argv]
        self.emit("$ " + shlex.join(shown))
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                list(argv),
                cwd=cwd,
                env=self._env(env),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                check=False,
            )
            done = Completed(exit_code=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
        except OSError as exc:
            done = Completed(exit_code=127, stdout="", stderr=f"{argv[0]}: {exc.strerror}")
        seconds = time.perf_counter() - started
        self.records.append(
            CommandRecord(
                argv=shown,
                exitCode=done.exit_code,
                seconds=round(seconds, 4),
                stdout=redact_urls(_tail(done.stdout)),
                stderr=redact_urls(_tail(done.stderr)),
            )
        )
        return done

    def stream(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None
    ) -> tuple[int, float]:
        """Run ``argv`` with stdout and stderr merged, emitting each line as it arrives."""
        self.emit("$ " + shlex.join(argv))
        tail = OutputTail(OUTPUT_LIMIT)
        started = time.perf_counter()
        try:
            with subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=self._env(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
            ) as proc:
                assert proc.stdout is not None
                try:
                    for raw in proc.stdout:
                        line = raw.rstrip("\n")
                        self.emit(line)
                        tail.add(raw.encode())
                except BaseException:
                    # Interrupted (SIGTERM from the runner): the check must not outlive us.
                    proc.kill()
                    raise
                exit_code = proc.wait()
        except OSError as exc:
            exit_code = 127
            tail.add(f"{argv[0]}: {exc.strerror}".encode())
        seconds = time.perf_counter() - started
        self.records.append(
            CommandRecord(
                argv=list(argv),
                exitCode=exit_code,
                seconds=round(seconds, 4),
                stdout=tail.text().rstrip("\n"),
            )
        )
        return exit_code, seconds

    def as_artifacts(self) -> list[dict[str, Any]]:
        return [msgspec.to_builtins(r) for r in self.records]


class Git:
    """The questions the maintenance flow asks one repository, one function each."""

    def __init__(self, repo: Path, log: CommandLog) -> None:
        self.repo = repo
        self.log = log
        # Where the repository keeps its state does not move during a run: ask once.
        self._git_dir: Path | None = None
        self._common_dir: Path | None = None

    def __call__(self, *args: str, config: Sequence[str] = ()) -> Completed:
        argv = ["git"]
        for item in config:
            argv += ["-c", item]
        # C messages: the flow recognises a few of git's answers (e.g. "stale info").
        return self.log.run([*argv, *args], self.repo, {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"})

    def _value(self, *args: str) -> str | None:
        done = self(*args)
        return done.stdout.strip() if done.ok and done.stdout.strip() else None

    def git_dir(self) -> Path:
        """This checkout's own git dir (where an in-progress rebase or merge keeps its state)."""
        if self._git_dir is None:
            value = self._value("rev-parse", "--absolute-git-dir")
            if value is None:
                raise RuntimeError(f"cannot find the git dir of {self.repo}")
            self._git_dir = Path(value)
        return self._git_dir

    def common_dir(self) -> Path:
        """The git dir shared by all worktrees of the repository."""
        if self._common_dir is None:
            value = self._value("rev-parse", "--git-common-dir")
            if value is None:
                raise RuntimeError(f"cannot find the git dir of {self.repo}")
            self._common_dir = (self.repo / value).resolve()
        return self._common_dir

    def remotes(self) -> list[str]:
        done = self("remote")
        return done.stdout.split() if done.ok else []

    def add_remote(self, name: str, url: str) -> Completed:
        return self("remote", "add", name, url)

    def current_branch(self) -> str | None:
        """The checked-out branch, or None when HEAD is detached."""
        return self._value("symbolic-ref", "--quiet", "--short", "HEAD")

    def head_sha(self) -> str:
        value = self._value("rev-parse", "--verify", "HEAD")
        if value is None:
            raise RuntimeError(f"{self.repo} has no commit checked out")
        return value

    def resolve_commit(self, rev: str) -> str | None:
        """The commit ``rev`` names (peeling tags), or None when it names none."""
        return self._value("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")

    def resolve_tree(self, rev: str) -> str | None:
        """The tree of the commit ``rev`` names: two commits with one tree have one content."""
        return self._value("rev-parse", "--verify", "--quiet", f"{rev}^{{tree}}")

    def ref_sha(self, ref: str) -> str | None:
        return self._value("rev-parse", "--verify", "--quiet", ref)

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        done = self("merge-base", "--is-ancestor", ancestor, descendant)
        if done.exit_code not in (0, 1):
            raise RuntimeError(f"git merge-base failed: {done.last_line()}")
        return done.ok

    def merge_base(self, a: str, b: str) -> str | None:
        return self._value("merge-base", a, b)

    def count_commits(self, revision_range: str) -> int:
        value = self._value("rev-list", "--count", revision_range)
        return int(value) if value else 0

    def status_lines(self) -> list[str]:
        """``git status --porcelain`` lines: empty means a clean tree (untracked files count)."""
        done = self("status", "--porcelain")
        if not done.ok:
            raise RuntimeError(f"git status failed: {done.last_line()}")
        return [line for line in done.stdout.splitlines() if line]

    def operation_in_progress(self) -> str | None:
        """The name of a rebase, merge, cherry-pick or revert that has stopped half-way."""
        git_dir = self.git_dir()
        if (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists():
            return "rebase"
        for marker, name in (
            ("MERGE_HEAD", "merge"),
            ("CHERRY_PICK_HEAD", "cherry-pick"),
            ("REVERT_HEAD", "revert"),
        ):
            if (git_dir / marker).exists():
                return name
        # A multi-commit cherry-pick or revert whose stopped commit was resolved with a plain
        # `git commit`: no *_HEAD file is left, only the sequencer's to-do list.
        todo = git_dir / "sequencer" / "todo"
        if todo.exists():
            words = todo.read_text(encoding="utf-8", errors="replace").split(maxsplit=1)
            return "revert" if words[:1] == ["revert"] else "cherry-pick"
        return None

    def config_value(self, key: str) -> str | None:
        return self._value("config", "--get", key)

    def unmerged_files(self) -> list[str]:
        done = self("diff", "--name-only", "--diff-filter=U")
        return [line for line in done.stdout.splitlines() if line] if done.ok else []

    def subject(self, rev: str) -> str:
        return self._value("log", "-1", "--format=%s", rev) or ""

    def switch(self, branch: str) -> Completed:
        return self("switch", "--quiet", "--no-guess", branch)

    def switch_detached(self, sha: str) -> Completed:
        return self("switch", "--quiet", "--detach", sha)
