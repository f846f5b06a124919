"""``workspace init``: write a workspace.toml for an existing fork checkout.

It looks at the checkout (its branch, its remotes, the newest release tag on its upstream, the
checks the project already has) and writes a commented workspace.toml with one fork entry
(``push = false``) and a git-tags source for it, which primes on the tags that exist. git runs
through ``sh`` here: this command is never on the quick ``run`` / ``tick`` path.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workspace_adapter.base.errors import EXIT_BAD_INPUT, EXIT_OK, UserError

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals

CONFIG_NAME = "workspace.toml"
IGNORE_LINE = ".workspace/"
# A tag that reads as a version: v1.2.3, 1.2, v2.0.0-rc.1 is not a release.
_RELEASE = re.compile(r"^(?P<prefix>v?)(?P<nums>\d+(?:\.\d+){0,3})$")
_SCP_LIKE = re.compile(r"^[\w.-]+@(?P<host>[^:/]+):(?P<path>.+)$")


class InitError(UserError):
    """Bad input for ``init``: one line, exit 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_BAD_INPUT)


def init(
    g: Globals,
    *,
    root: Path | None = None,
    fork: str | None,
    upstream: str | None,
    force: bool,
    harness: bool,
    as_json: bool,
) -> int:
    """Write ``<root>/workspace.toml`` for the fork checkout ``fork`` (default: the root)."""
    root = (root or g.workspace_root).resolve()
    if harness:
        return _harness(g, root, force=force, as_json=as_json)
    target = root / CONFIG_NAME
    if target.exists() and not force:
        raise InitError(f"{target} already exists; pass --force to replace it")
    checkout = Path(fork).expanduser().resolve() if fork else root
    found = detect(checkout, upstream)
    entry_path = _relative(checkout, root)
    text = render(found, entry_path, workspace_name=root.name)
    _check(text, target, root)
    target.write_text(text, encoding="utf-8")
    ignore = _ignore_workspace_dir(root)
    steps = next_commands(found)
    inside = checkout == root or root.is_relative_to(checkout)
    if as_json:
        document = {
            "workspace": str(root),
            "config": str(target),
            "gitignore": ignore,
            "fork": {**found, "path": entry_path, "push": False},
            "next": steps,
        }
        print(json.dumps(document))
        return EXIT_OK
    print(f"wrote {target}")
    print(f"  fork      {found['name']}: {entry_path} on {found['branch']}")
    print(f"  upstream  {found['upstream_remote']} = {found['upstream_url']}")
    print(f"  release   newest tag {found['latest_tag']} (release_tags {found['release_tags']})")
    checks = ", ".join(found["verify_commands"]) or "none found; add verify_commands"
    print(f"  checks    {checks}")
    print("  push      off (set push = true once a run looks right)")
    print(f"  .gitignore: {IGNORE_LINE} {ignore}")
    if inside:
        print("commit workspace.toml and .gitignore first: maintenance needs a clean tree")
    print("next:")
    for command in steps:
        print(f"  {command}")
    return EXIT_OK


def _harness(g: Globals, root: Path, *, force: bool, as_json: bool) -> int:
    from workspace_adapter.harness import init_harness

    init_harness(root, force=force)
    steps = [
        "workspace flow run patch-moi-harness",
        "workspace run harness",
        "workspace watch --once",
    ]
    if as_json:
        print(json.dumps({"workspace": str(root), "harness": str(root / "harness"), "next": steps}))
        return EXIT_OK
    print(f"built {root / 'harness'}: harness/upstream, harness/fork, harness/remotes (bare)")
    print("next:")
    for command in steps:
        print(f"  {command}")
    return EXIT_OK


# -- what the checkout says -------------------------------------------------------------------


def _git(checkout: Path, *args: str) -> str:
    import sh

    from workspace_adapter.base.gitenv import no_git_env

    try:
        out = sh.git(*args, _cwd=str(checkout), _env=no_git_env(), _tty_out=False)
    except sh.CommandNotFound:
        raise InitError("git is not installed; install it and run `workspace init` again") from None
    return str(out).strip()


def _git_ok(checkout: Path, *args: str) -> str | None:
    import sh

    try:
        return _git(checkout, *args)
    except sh.ErrorReturnCode:
        return None


def detect(checkout: Path, upstream_url: str | None) -> dict[str, Any]:
    """The fork entry's values as found in ``checkout``; :class:`InitError` when unusable."""
    if not checkout.is_dir():
        raise InitError(f"{checkout} is not a folder; pass --fork PATH of a fork checkout")
    top = _git_ok(checkout, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != checkout:
        where = f" (it is inside {top})" if top else ""
        raise InitError(
            f"{checkout} is not a git repository{where}; run `workspace init` in a fork "
            "checkout, or pass --fork PATH"
        )
    branch = _git_ok(checkout, "symbolic-ref", "--quiet", "--short", "HEAD")
    if not branch:
        raise InitError(f"{checkout}: HEAD is detached; check out the branch you maintain")
    remotes = (_git_ok(checkout, "remote") or "").split()
    if "upstream" in remotes:
        url = _git(checkout, "remote", "get-url", "upstream")
    elif upstream_url:
        _git(checkout, "remote", "add", "upstream", upstream_url)
        url = upstream_url
    else:
        known = ", ".join(remotes) or "none"
        raise InitError(
            f"{checkout} has no remote named upstream (remotes: {known}); pass --upstream URL"
        )
    tags = _release_tags(checkout)
    if not tags and "upstream" not in remotes:
        _git_ok(checkout, "remote", "remove", "upstream")  # leave the checkout as it was
    if not tags:
        raise InitError(
            f"no release tag (like v1.2.3) on upstream {url}; the fork follows upstream "
            "releases, so tag one there first"
        )
    latest = tags[-1]
    prefix = _RELEASE.match(latest)
    pattern = r"re:v\d+(\.\d+)*" if prefix and prefix.group("prefix") else r"re:\d+(\.\d+)*"
    return {
        "name": _fork_name(checkout),
        "branch": branch,
        "upstream_remote": "upstream",
        "upstream_url": url,
        "repo": repo_of(url),
        "release_tags": pattern,
        "latest_tag": latest,
        "verify_commands": verify_commands(checkout),
        "push_remotes": ["origin"] if "origin" in remotes else [],
        "canonical_remote": "origin" if "origin" in remotes else None,
    }


def _release_tags(checkout: Path) -> list[str]:
    """The upstream's version-like tags, oldest first."""
    listed = _git_ok(checkout, "ls-remote", "--tags", "--refs", "upstream") or ""
    tags = [
        line.rsplit("refs/tags/", 1)[-1] for line in listed.splitlines() if "refs/tags/" in line
    ]
    releases = [t for t in tags if _RELEASE.match(t)]
    return sorted(releases, key=lambda t: tuple(int(n) for n in t.lstrip("v").split(".")))


def _fork_name(checkout: Path) -> str:
    name = re.sub(r"[^a-z0-9_.-]+", "-", checkout.name.lower()).strip("-._")
    return name or "fork"


def repo_of(url: str) -> str:
    """``owner/name`` of an upstream URL (or the last two parts of a path), without ``.git``."""
    scp = _SCP_LIKE.match(url)
    path = scp.group("path") if scp else re.sub(r"^[a-z+]+://[^/]*", "", url)
    parts = [p for p in path.rstrip("/").split("/") if p]
    parts[-1:] = [parts[-1].removesuffix(".git")] if parts else []
    return "/".join(parts[-2:]) or url


def verify_commands(checkout: Path) -> list[str]:
    """The checks the project already has, cheapest to find first."""
    found: list[str] = []
    package = checkout / "package.json"
    if package.is_file():
        try:
            scripts = json.loads(package.read_text(encoding="utf-8")).get("scripts") or {}
        except (OSError, ValueError, AttributeError):
            scripts = {}
        for script in ("test", "lint", "check", "typecheck"):
            if isinstance(scripts, dict) and script in scripts:
                found.append("npm test" if script == "test" else f"npm run {script}")
    if (checkout / "tox.ini").is_file() or "[tool.tox]" in _text(checkout / "pyproject.toml"):
        found.append("tox")
    elif (checkout / "noxfile.py").is_file():
        found.append("nox")
    elif "[tool.pytest" in _text(checkout / "pyproject.toml") or (checkout / "pytest.ini").exists():
        found.append("python -m pytest")
    if (checkout / "Cargo.toml").is_file():
        found.append("cargo test")
    makefile = _text(checkout / "Makefile")
    for target in ("check", "test"):
        if re.search(rf"(?m)^{target}\s*:", makefile):
            found.append(f"make {target}")
            break
    return found


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


# -- what init writes -------------------------------------------------------------------------


def _relative(checkout: Path, root: Path) -> str:
    try:
        return str(checkout.relative_to(root)) or "."
    except ValueError:
        return str(checkout)


def _s(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def _list(values: list[str]) -> str:
    return "[" + ", ".join(_s(v) for v in values) + "]"


def render(found: dict[str, Any], path: str, *, workspace_name: str) -> str:
    """The commented workspace.toml for one fork."""
    name = found["name"]
    canonical = found["canonical_remote"]
    lines = [
        "# Written by `workspace init`. Every release tag of the upstream is a maintenance run:",
        "# rebase the branch onto the tag, run the checks, report candidate refs, push when",
        "# push = true. `workspace doctor` checks this file.",
        "",
        "[workspace]",
        f"name = {_s(workspace_name)}",
        'timezone = "UTC"',
        "",
        "# The fork: the checkout, its branch, and where its upstream's releases come from.",
        "[[workspace.forks]]",
        f"name = {_s(name)}",
        f"path = {_s(path)}",
        f"branch = {_s(found['branch'])}",
        f"upstream_remote = {_s(found['upstream_remote'])}",
        f"upstream_url = {_s(found['upstream_url'])}",
        "# What an event's payload.repo says for this fork.",
        f"repo = {_s(found['repo'])}",
        f"# A glob, or a regular expression after re:; newest found: {found['latest_tag']}",
        f"release_tags = {_s(found['release_tags'])}",
        "# Run in the checkout after each rebase; a failure keeps the branch as it was.",
        f"verify_commands = {_list(found['verify_commands'])}",
        f"push_remotes = {_list(found['push_remotes'])}",
        "# Off until a run looks right: candidate refs are then reported, never pushed.",
        "push = false",
    ]
    if canonical:
        lines.append(f"canonical_remote = {_s(canonical)}")
    lines += [
        "",
        "# New release tags of the upstream (`workspace watch`, `workspace serve`). The first",
        "# poll only records the tags that exist, so nothing old is replayed.",
        "[[workspace.sources]]",
        f"id = {_s(name + '-releases')}",
        'kind = "git-tags"',
        f"fork = {_s(name)}",
        'interval = "30m"',
        "prime_only = true",
        "",
    ]
    return "\n".join(lines)


def _check(text: str, target: Path, root: Path) -> None:
    """What init writes must load; a problem here is ours, so it says so."""
    from workspace_adapter.local.config import ConfigError
    from workspace_adapter.local.configfile import parse

    tomllib.loads(text)
    try:
        parse(text, target, root)
    except ConfigError as exc:
        raise InitError(f"workspace init wrote an invalid file: {exc.problems[0]}") from None


def _ignore_workspace_dir(root: Path) -> str:
    """Add ``.workspace/`` to ``<root>/.gitignore``; says ``added`` or ``already there``."""
    ignore = root / ".gitignore"
    text = _text(ignore)
    if any(line.strip() in (".workspace", ".workspace/", "/.workspace/") for line in text.split()):
        return "already there"
    prefix = "" if not text or text.endswith("\n") else "\n"
    with ignore.open("a", encoding="utf-8") as fh:
        fh.write(f"{prefix}{IGNORE_LINE}\n")
    return "added"


def next_commands(found: dict[str, Any]) -> list[str]:
    return [
        "workspace doctor",
        f"workspace flow run fork-maintenance --fork {found['name']} --tag {found['latest_tag']}",
        "workspace watch --once",
    ]
