"""The ``git-tags`` source: ``git ls-remote --tags`` against any remote, forge or local path."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import anyio

from workspace_adapter.base.gitenv import no_git_env
from workspace_adapter.sources.release import Release, SourceError

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SCP_LIKE = re.compile(r"^[^/\s]+@[^/\s:]+:")


def resolve_url(url: str, root: Path) -> str:
    """A URL as git takes it; a relative local path is relative to the workspace root."""
    if _SCHEME.match(url) or _SCP_LIKE.match(url) or Path(url).is_absolute():
        return url
    return str((root / url).resolve())


def parse_ls_remote(text: str) -> dict[str, str]:
    """``{tag: commit sha}`` from ``ls-remote --tags`` output; annotated tags are peeled."""
    tags: dict[str, str] = {}
    peeled: dict[str, str] = {}
    for line in text.splitlines():
        sha, _, ref = line.strip().partition("\t")
        if not ref.startswith("refs/tags/"):
            continue
        name = ref.removeprefix("refs/tags/")
        if name.endswith("^{}"):
            peeled[name.removesuffix("^{}")] = sha
        else:
            tags[name] = sha
    return {name: peeled.get(name, sha) for name, sha in tags.items()}


async def list_tags(url: str, root: Path, timeout: float) -> dict[str, str]:
    """``{tag: sha}`` of the remote at ``url``; :class:`SourceError` with git's reason."""
    target = resolve_url(url, root)
    try:
        with anyio.fail_after(timeout):
            done = await anyio.run_process(
                ["git", "ls-remote", "--tags", target],
                cwd=root,
                env={**no_git_env(), "GIT_TERMINAL_PROMPT": "0"},  # nobody answers a prompt
                check=False,
                stdin=subprocess.DEVNULL,
            )
    except TimeoutError:
        raise SourceError(f"git ls-remote --tags {target} timed out after {timeout:g}s") from None
    except FileNotFoundError:
        raise SourceError("git is not installed (not on PATH); install git") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else "no output"
        raise SourceError(
            f"git ls-remote --tags {target} failed (exit {done.returncode}): {why}; "
            "check the source's url"
        )
    return parse_ls_remote(done.stdout.decode(errors="replace"))


async def releases(url: str, root: Path, timeout: float) -> list[Release]:
    """Every tag of the remote as a release (unordered; the caller filters and sorts)."""
    tags = await list_tags(url, root, timeout)
    shown = resolve_url(url, root)
    return [Release(tag=tag, provider="git", url=shown, sha=sha) for tag, sha in tags.items()]
