"""The local harness: an upstream npm package, its fork, and their bare remotes.

Everything is built offline and deterministically (fixed names, emails and dates, no user or
system git config), so every machine gets the same shas. Remote URLs are relative
(``../remotes/origin.git``) so a copied ``harness/`` keeps working where it lands.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from workspace_adapter.base.errors import UserError
from workspace_adapter.base.gitenv import no_git_env

PACKAGE = "patch-moi-harness"
REMOTES = ("upstream", "origin", "jojo")
UPSTREAM_WHO = ("Peezy Upstream", "upstream@patch-moi.invalid")
FORK_WHO = ("Matamune Fork", "fork@patch-moi.invalid")
_EPOCH = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)
_VERSION_TAG = re.compile(r"v(\d+)\.(\d+)\.(\d+)")
_EXPORTS_LINE = re.compile(r"^module\.exports = .*$", re.MULTILINE)

_FUNCTIONS = {
    "greet": """function greet(name = DEFAULT_NAME) {
  return `Hello, ${name}!`;
}
""",
    "greet-trim": """function greet(name = DEFAULT_NAME) {
  return `Hello, ${String(name).trim()}!`;
}
""",
    "add": """function add(a, b) {
  return a + b;
}
""",
    "slugify": """function slugify(text) {
  return String(text)
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
}
""",
    "clamp": """function clamp(value, min, max) {
  return Math.min(Math.max(value, min), max);
}
""",
}
_TESTS = {
    "greet": "test('greet', () => assert.equal(greet('moi'), 'Hello, moi!'));\n",
    "greet-trim": "test('greet trims', () => assert.equal(greet(' moi '), 'Hello, moi!'));\n",
    "add": "test('add', () => assert.equal(add(2, 3), 5));\n",
    "slugify": "test('slugify', () => assert.equal(slugify('Patch Moi!'), 'patch-moi'));\n",
    "clamp": "test('clamp', () => assert.equal(clamp(12, 0, 10), 10));\n",
}
# (version, features, changelog line) for v0.1.0 ... v0.1.3.
_RELEASES = (
    ("0.1.0", ("greet", "add"), "First release: greet() and add()."),
    ("0.1.1", ("greet", "add", "slugify"), "Add slugify()."),
    ("0.1.2", ("greet", "add", "slugify", "clamp"), "Add clamp()."),
    ("0.1.3", ("greet-trim", "add", "slugify", "clamp"), "greet() trims the name."),
)

_README = """# patch-moi-harness

A tiny dependency-free package: the upstream of the patch.moi harness.

```js
const { greet } = require('patch-moi-harness');
greet('moi'); // 'Hello, moi!'
```
"""
_FORK_BANNER = "function forkBanner() {\n  return 'patch-moi-harness, matamune-peezy fork';\n}\n"
_FORK_TEST = """'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { forkBanner, greet } = require('..');

test('forkBanner names the fork', () => {
  assert.match(forkBanner(), /matamune-peezy fork/);
});

test('the fork keeps upstream greet', () => {
  assert.equal(greet('fork'), 'Hello, fork!');
});
"""
_FORK_README_NOTE = """
## Fork notes

This is the matamune-peezy fork. It adds `forkBanner()`, which names the fork; everything else
follows upstream releases, rebased by workspace-adapter.
"""


def _exported(features: tuple[str, ...]) -> list[str]:
    return [f.split("-")[0] for f in features]


def _index_js(features: tuple[str, ...]) -> str:
    body = "\n".join(_FUNCTIONS[f] for f in features)
    names = ", ".join(_exported(features))
    return (
        f"'use strict';\n\nconst DEFAULT_NAME = 'world';\n\n{body}\n"
        f"module.exports = {{ {names} }};\n"
    )


def _test_js(features: tuple[str, ...]) -> str:
    names = ", ".join(_exported(features))
    body = "".join(_TESTS[f] for f in features)
    return (
        "'use strict';\n\nconst test = require('node:test');\n"
        "const assert = require('node:assert/strict');\n"
        f"const {{ {names} }} = require('..');\n\n{body}"
    )


def _package_json(version: str) -> str:
    data = {
        "name": PACKAGE,
        "version": version,
        "description": "A tiny dependency-free package for the patch.moi harness.",
        "main": "index.js",
        "files": ["index.js"],
        "scripts": {"test": "node --test", "pack:dry-run": "npm pack --dry-run"},
        "license": "MIT",
    }
    return json.dumps(data, indent=2) + "\n"


def _changelog(entries: list[tuple[str, str]]) -> str:
    parts = [f"## {version}\n\n- {line}\n" for version, line in reversed(entries)]
    return "# Changelog\n\n" + "\n".join(parts)


def _env(who: tuple[str, str], when: dt.datetime) -> dict[str, str]:
    # No inherited GIT_* at all and no user/system config: the shas depend only on our inputs.
    env = no_git_env(keep_settings=False)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME=who[0],
        GIT_AUTHOR_EMAIL=who[1],
        GIT_COMMITTER_NAME=who[0],
        GIT_COMMITTER_EMAIL=who[1],
        GIT_AUTHOR_DATE=stamp,
        GIT_COMMITTER_DATE=stamp,
        LC_ALL="C",
    )
    return env


def _git(
    cwd: Path, *args: str, who: tuple[str, str] = UPSTREAM_WHO, when: dt.datetime = _EPOCH
) -> str:
    # A synchronous sequence of git commands is the whole job here, and the import of ``sh``
    # (about 110 ms) does not count for a command that builds repositories.
    import sh

    try:
        return str(sh.git(*args, _cwd=str(cwd), _env=_env(who, when), _tty_out=False))
    except sh.CommandNotFound:
        raise UserError("harness: git is not installed; install git and retry") from None
    except sh.ErrorReturnCode as exc:
        text = exc.stderr.decode(errors="replace").strip() or exc.stdout.decode(errors="replace")
        reason = text.strip().splitlines()
        raise UserError(
            f"harness: `git {' '.join(args)}` failed in {cwd}: "
            f"{reason[-1] if reason else exc.exit_code}",
            exit_code=1,
        ) from None


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _commit(repo: Path, message: str, who: tuple[str, str], when: dt.datetime) -> None:
    _git(repo, "add", "--all", who=who, when=when)
    _git(repo, "commit", "--quiet", "--no-verify", "-m", message, who=who, when=when)


def _build_upstream(harness: Path) -> None:
    upstream = harness / "upstream"
    _git(harness, "init", "--quiet", "-b", "main", "upstream")
    _git(upstream, "remote", "add", "origin", "../remotes/upstream.git")
    entries: list[tuple[str, str]] = []
    for i, (version, features, note) in enumerate(_RELEASES):
        entries.append((version, note))
        files = {
            "package.json": _package_json(version),
            "index.js": _index_js(features),
            "test/index.test.js": _test_js(features),
            "CHANGELOG.md": _changelog(entries),
        }
        if i == 0:
            files |= {"README.md": _README, ".gitignore": "node_modules/\n*.tgz\n"}
        _write(upstream, files)
        when = _EPOCH + dt.timedelta(days=7 * i)
        _commit(upstream, f"Release v{version}: {note}", UPSTREAM_WHO, when)
        _git(upstream, "tag", f"v{version}")
    _git(upstream, "push", "--quiet", "-u", "origin", "main")
    _git(upstream, "push", "--quiet", "origin", "--tags")


def start_fork(harness: Path) -> Path:
    """``harness/fork``: a new repository with its three remotes, ``main`` at v0.1.3."""
    fork = harness / "fork"
    _git(harness, "init", "--quiet", "-b", "main", "fork")
    for name in ("origin", "upstream", "jojo"):
        _git(fork, "remote", "add", name, f"../remotes/{name}.git")
    _git(fork, "fetch", "--quiet", "--tags", "upstream")
    _git(fork, "checkout", "--quiet", "-B", "main", "refs/tags/v0.1.3")
    return fork


def with_fork_banner(index: str) -> str:
    """``index.js`` with the fork's ``forkBanner()``, exported on the line upstream exports."""
    exports = _EXPORTS_LINE.search(index)
    assert exports is not None
    return index.replace(
        exports.group(0),
        _FORK_BANNER + "\n" + exports.group(0).replace(" };", ", forkBanner };"),
    )


def _build_fork(harness: Path) -> None:
    fork = start_fork(harness)
    forked = with_fork_banner((fork / "index.js").read_text(encoding="utf-8"))
    readme = (fork / "README.md").read_text(encoding="utf-8") + _FORK_README_NOTE
    commits = (
        ({"index.js": forked}, "fork: add forkBanner()"),
        ({"test/fork.test.js": _FORK_TEST}, "fork: test forkBanner()"),
        ({"README.md": readme}, "fork: note what the fork carries"),
    )
    for i, (files, message) in enumerate(commits):
        _write(fork, files)
        _commit(fork, message, FORK_WHO, _EPOCH + dt.timedelta(days=40, hours=i))
    _git(fork, "push", "--quiet", "-u", "origin", "main")
    _git(fork, "push", "--quiet", "jojo", "main")


def init_harness(
    root: Path, *, force: bool = False, build_fork: Callable[[Path], None] | None = None
) -> None:
    """Build ``root/harness`` (bare remotes, upstream clone, fork); refuse to replace one.

    ``build_fork`` builds ``fork`` in the folder it is given, after the upstream (default: the
    tutorial's fork; :mod:`workspace_adapter.patchharness` passes its patch-series fork).
    """
    target = root / "harness"
    if target.exists() and not force:
        raise UserError(f"{target} already exists; pass --force to rebuild it")
    root.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed into place, so a failure never leaves half a harness.
    build = Path(tempfile.mkdtemp(prefix=".harness-build-", dir=root))
    try:
        build.chmod(0o755)
        (build / "remotes").mkdir()
        for name in REMOTES:
            _git(build / "remotes", "init", "--quiet", "--bare", "-b", "main", f"{name}.git")
        _build_upstream(build)
        (build_fork or _build_fork)(build)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=".harness-old-", dir=root))
            target.rename(old / "harness")
            build.rename(target)
            shutil.rmtree(old)
        else:
            build.rename(target)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def latest_version(upstream: Path) -> tuple[int, int, int]:
    """The highest ``vX.Y.Z`` tag of the upstream clone."""
    versions = [
        (int(m[1]), int(m[2]), int(m[3]))
        for name in _git(upstream, "tag", "--list", "v*").split()
        if (m := _VERSION_TAG.fullmatch(name))
    ]
    if not versions:
        raise UserError(f"{upstream} has no vX.Y.Z tag; rebuild it with `workspace harness init`")
    return max(versions)


def _conflicting_index(index: str, tag: str) -> str:
    """Export ``version()`` on the very line the fork's first commit changes."""
    if "function version()" not in index:
        function = "function version() {\n  return require('./package.json').version;\n}\n"
        index = _EXPORTS_LINE.sub(lambda m: function + "\n" + m.group(0), index, count=1)
    exports = _EXPORTS_LINE.search(index)
    assert exports is not None
    names = [n.strip() for n in exports.group(0).split("{", 1)[1].split("}", 1)[0].split(",")]
    names = [n for n in names if n] + ([] if "version" in names else ["version"])
    line = f"module.exports = {{ {', '.join(names)} }}; // as of {tag}"
    return index.replace(exports.group(0), line)


def next_version(root: Path, bump: str = "patch") -> tuple[int, int, int]:
    """The version the next release of the upstream clone gets; refuses an unusable clone."""
    upstream = root / "harness" / "upstream"
    if not (upstream / ".git").is_dir():
        raise UserError(f"{upstream} not found; run `workspace harness init` first")
    if bump not in ("patch", "minor"):
        raise UserError(f"--bump must be patch or minor, not {bump!r}")
    if _git(upstream, "status", "--porcelain").strip():
        raise UserError(f"{upstream} has uncommitted changes; commit or discard them first")
    major, minor, patch = latest_version(upstream)
    return (major, minor, patch + 1) if bump == "patch" else (major, minor + 1, 0)


def release_time(version: tuple[int, int, int]) -> dt.datetime:
    """The date of a release follows from its version: the same release, the same sha."""
    major, minor, patch = version
    return _EPOCH + dt.timedelta(days=60, hours=major * 10000 + minor * 100 + patch)


def cut_release(
    root: Path, *, bump: str = "patch", conflict: bool = False, note: str | None = None
) -> str:
    """Bump, commit, tag and push an upstream release; returns the new tag.

    ``note`` replaces the changelog line (and commit subject) of a plain release.
    """
    upstream = root / "harness" / "upstream"
    major, minor, patch = next_version(root, bump)
    version = f"{major}.{minor}.{patch}"
    tag = f"v{version}"
    _git(upstream, "checkout", "--quiet", "main")
    package = json.loads((upstream / "package.json").read_text(encoding="utf-8"))
    package["version"] = version
    note = "Export version()." if conflict else (note or "Maintenance release.")
    changelog = (upstream / "CHANGELOG.md").read_text(encoding="utf-8")
    head, _, rest = changelog.partition("\n\n")
    files = {
        "package.json": json.dumps(package, indent=2) + "\n",
        "CHANGELOG.md": f"{head}\n\n## {version}\n\n- {note}\n\n{rest}",
    }
    if conflict:
        files["index.js"] = _conflicting_index(
            (upstream / "index.js").read_text(encoding="utf-8"), tag
        )
        tests = (upstream / "test/index.test.js").read_text(encoding="utf-8")
        check = f"test('version', () => assert.equal(require('..').version(), '{version}'));\n"
        files["test/index.test.js"] = tests + check
    _write(upstream, files)
    _commit(upstream, f"Release {tag}: {note}", UPSTREAM_WHO, release_time((major, minor, patch)))
    _git(upstream, "tag", tag)
    _git(upstream, "push", "--quiet", "origin", "main", f"refs/tags/{tag}")
    return tag


def tag_sha(root: Path, tag: str) -> str:
    """The commit an upstream tag points at."""
    upstream = root / "harness" / "upstream"
    return _git(upstream, "rev-parse", f"refs/tags/{tag}^{{commit}}").strip()
