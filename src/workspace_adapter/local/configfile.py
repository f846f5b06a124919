"""Reading workspace.toml: find the file, parse the TOML, check it against the schema.

:func:`load` always checks the whole file. :func:`load_cached` is for the commands that start
often (``run``, ``tick``, ``serve``'s ticks): it keeps the checked config in
``.workspace/config-cache.marshal`` keyed by the file's path, inode, size and mtime (and by the
schema's own source files and the interpreter), and reads that back with :mod:`marshal` (built
in: no import at all) while the file is unchanged, so neither msgspec nor tomllib is imported on
that path (docs/decisions/0001-stdlib-only-cli-fast-path.md). A cache written within
:data:`RACY_SECONDS` of the file's last change could miss an edit made in the same timestamp
tick, so it also keeps the text, and is trusted only while the text is the same (git's
"racily clean" rule).
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workspace_adapter.base import paths
from workspace_adapter.local.config import ConfigError, WorkspaceConfig, display_path

CACHE_NAME = "config-cache.marshal"
CACHE_FORMAT = 2
RACY_SECONDS = 2.0
# A change to the schema changes what a valid file loads as: its sources are part of the key.
_SCHEMA_SOURCES = (
    Path(__file__).with_name("config.py"),
    Path(__file__).with_name("configcheck.py"),
)


def config_path(root: Path) -> Path | None:
    """``<root>/workspace.toml``, else ``<root>/.codex/workspace.toml``, else None."""
    for name in paths.CONFIG_CANDIDATES:
        candidate = root / name
        if candidate.is_file():
            return candidate
    return None


def _missing(root: Path) -> ConfigError:
    return ConfigError(
        [
            f"no workspace.toml in {root} (nor .codex/workspace.toml); create one, or pass "
            "--workspace-root pointing at the folder that holds it"
        ]
    )


def load(root: Path) -> WorkspaceConfig:
    """Read and validate the workspace's config; :class:`ConfigError` (exit 2) on any problem."""
    path = config_path(root)
    if path is None:
        raise _missing(root)
    return parse(_read(path), path, root)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # an editor's byte-order mark is harmless
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{display_path(path)}: cannot read: {exc}"]) from None


def parse(text: str, path: Path, root: Path) -> WorkspaceConfig:
    """Validate the TOML ``text`` of ``path``; see :func:`load`."""
    # Only when checking: msgspec, and tomllib (about 5 ms to import, compiling its patterns).
    import tomllib

    from workspace_adapter.local.configcheck import Checker

    shown = display_path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        line = match.group(1) if match else "1"
        raise ConfigError([f"{shown}:{line}: invalid TOML: {exc}"]) from None
    checker = Checker(shown, text)
    config = checker.workspace(data, path, root)
    if checker.problems:
        raise ConfigError(checker.problems)
    return config


def cache_path(root: Path) -> Path:
    return root / ".workspace" / CACHE_NAME


def _key(path: Path, st: os.stat_result) -> list[Any]:
    key: list[Any] = [CACHE_FORMAT, sys.implementation.cache_tag, marshal.version]
    key += [str(path), st.st_ino, st.st_size, st.st_mtime_ns]
    for source in _SCHEMA_SOURCES:
        with contextlib.suppress(OSError):
            schema = source.stat()
            key += [schema.st_size, schema.st_mtime_ns]
    return key


def load_cached(root: Path, *, write: bool = True) -> WorkspaceConfig:
    """:func:`load`, through the validated-config cache; ``write=False`` never writes a file."""
    config, save = open_cached(root)
    if write:
        save()
    return config


def _nothing() -> None:
    pass


def open_cached(root: Path) -> tuple[WorkspaceConfig, Callable[[], None]]:
    """:func:`load` through the cache, and what stores a freshly checked config in it.

    The second value does nothing when the cache was fresh; a command calls it once its other
    input proved valid, so bad input leaves no ``.workspace/`` behind.
    """
    path: Path | None = None
    for name in paths.CONFIG_CANDIDATES:
        candidate = root / name
        try:
            st = candidate.stat()
        except OSError:
            continue
        if not os.path.isdir(candidate):
            path = candidate
            break
    if path is None:
        raise _missing(root)
    key = _key(path, st)
    cached = _read_cache(root, key)
    if cached is not None and ("text" not in cached or cached["text"] == _read(path)):
        try:
            return WorkspaceConfig.from_json(cached["config"]), _nothing
        except (KeyError, TypeError, ValueError):
            pass  # a cache from another layout: check the file again
    text = _read(path)
    config = parse(text, path, root)
    racy = time.time() - st.st_mtime_ns / 1e9 < RACY_SECONDS
    entry = {"key": key, "config": config.to_json(), **({"text": text} if racy else {})}
    return config, functools.partial(_write_cache, root, entry)


def _read_cache(root: Path, key: list[Any]) -> dict[str, Any] | None:
    try:
        data = marshal.loads(cache_path(root).read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    return data


def _write_cache(root: Path, data: dict[str, Any]) -> None:
    """Replace the cache atomically; a folder that cannot be written only loses the speed-up."""
    target = cache_path(root)
    tmp = target.with_name(f".{CACHE_NAME}.{os.getpid()}.tmp")
    try:
        encoded = marshal.dumps(data)
    except ValueError:
        return  # a TOML date in a payload cannot be marshalled: such a config is checked each time
    try:
        target.parent.mkdir(exist_ok=True)
        ignore = target.parent / ".gitignore"
        if not ignore.exists():
            # Keeps .workspace/ out of git even when the repository forgot to ignore it.
            try:
                ignore.write_text("*\n", encoding="utf-8")
            except OSError:
                ignore.unlink(missing_ok=True)  # an empty one (a full disk) would ignore nothing
                raise
        tmp.write_bytes(encoded)
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
