"""What travels from the backend to a worker: names and values, never a path of the backend.

A :class:`PortableInvocation` names the flow and step, the package's version and a fingerprint
of its files, the event, the run's ids and a few options. A worker resolves it against its
own workspace (its own :class:`~workspace_adapter.flows.catalog.FlowCatalog`) into a
:class:`~workspace_adapter.flows.runner.StepInvocation` with its own paths; a package that is
missing there, or whose files differ from the backend's, ends the run ``failed`` with the reason
instead of running other code than the backend matched.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from workspace_adapter.flows.catalog import FlowCatalog
from workspace_adapter.flows.package import FlowPackage
from workspace_adapter.flows.runner import StepInvocation

SCHEMA_VERSION = 1
# Files of a package folder that are not the package: caches and editor leftovers.
_SKIPPED_DIRS = frozenset({"__pycache__", ".git", "node_modules"})


class StepOptions(msgspec.Struct, kw_only=True, frozen=True):
    """How the backend wants the step run: which of the worker's variables the step may see
    (names only, never values), who launched it, and the timeout the backend matched."""

    env_allow: tuple[str, ...] = ()
    launched_by: str = "workspace-backend"
    timeout_ms: int = 300_000


class PortableInvocation(msgspec.Struct, kw_only=True, frozen=True):
    """One run of one step, as a worker gets it (see the module docstring)."""

    schema: int = SCHEMA_VERSION
    flow: str
    step: str
    flow_version: str | int | float
    fingerprint: str
    event: dict[str, Any]
    event_id: str
    run_id: str
    attempt_id: str
    replay: bool = False
    backend_url: str = ""
    options: StepOptions = StepOptions()


class _Stamp(msgspec.Struct, frozen=True):
    files: tuple[tuple[str, int, int], ...]


_cache: dict[str, tuple[_Stamp, str]] = {}


def _files(root: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in sorted(names):
            if name.endswith(".pyc"):
                continue
            path = Path(folder) / name
            found.append((path.relative_to(root).as_posix(), path))
    return found


def package_fingerprint(package: FlowPackage) -> str:
    """A digest of every file of the package's folder (names and contents).

    Two machines with the same flow package agree on it whatever their paths; a changed
    script, schema or manifest changes it. Cached while the files' sizes and times stay.
    """
    files = _files(package.root)
    stat_stamp = []
    for rel, path in files:
        try:
            info = path.stat()
        except OSError:
            continue
        stat_stamp.append((rel, info.st_size, info.st_mtime_ns))
    stamp = _Stamp(tuple(stat_stamp))
    key = str(package.root)
    cached = _cache.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    digest = hashlib.sha256()
    for rel, path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        digest.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    value = "sha256:" + digest.hexdigest()
    _cache[key] = (stamp, value)
    return value


def portable(invocation: StepInvocation) -> PortableInvocation:
    """The backend's invocation as it travels (no path of this machine in it)."""
    return PortableInvocation(
        flow=invocation.package.name,
        step=invocation.step.name,
        flow_version=invocation.package.version,
        fingerprint=package_fingerprint(invocation.package),
        event=invocation.event,
        event_id=invocation.resolved_event_id,
        run_id=invocation.run_id,
        attempt_id=invocation.attempt_id or invocation.run_id,
        replay=invocation.replay,
        backend_url=invocation.workspace_backend_url,
        options=StepOptions(
            env_allow=invocation.env_allow,
            launched_by=invocation.launched_by,
            timeout_ms=invocation.step.timeout_ms,
        ),
    )


def encode(invocation: PortableInvocation) -> bytes:
    return msgspec.json.encode(invocation)


def decode(raw: bytes | str) -> PortableInvocation:
    """Raises ValueError with one line when ``raw`` is not an invocation this worker reads."""
    try:
        found = msgspec.json.decode(raw, type=PortableInvocation)
    except msgspec.DecodeError as exc:
        raise ValueError(f"the run's invocation cannot be read: {exc}") from None
    if found.schema != SCHEMA_VERSION:
        raise ValueError(
            f"the run's invocation has schema {found.schema}, this worker reads "
            f"{SCHEMA_VERSION}; run the same workspace-adapter version on backend and workers"
        )
    return found


def resolve(
    wanted: PortableInvocation, catalog: FlowCatalog, root: Path, worker: str
) -> StepInvocation | str:
    """The invocation on this worker, or why it cannot run here (one line)."""
    found = catalog.find(wanted.flow, wanted.step)
    if found is None:
        return (
            f"worker {worker} has no flow step {wanted.flow}/{wanted.step} under {root}; "
            "deploy the same flow packages to every worker"
        )
    package, step = found
    mine = package_fingerprint(package)
    if mine != wanted.fingerprint:
        return (
            f"worker {worker}: flow package {wanted.flow!r} differs from the backend's "
            f"(version {package.version!r} here, {wanted.flow_version!r} there; files "
            f"{mine[7:19]} here, {wanted.fingerprint[7:19]} there); deploy the same flow "
            "packages to every worker"
        )
    return StepInvocation(
        package=package,
        step=step,
        event=wanted.event,
        run_id=wanted.run_id,
        workspace_root=root,
        event_id=wanted.event_id,
        attempt_id=wanted.attempt_id,
        replay=wanted.replay,
        workspace_backend_url=wanted.backend_url,
        launched_by=wanted.options.launched_by,
        env_allow=wanted.options.env_allow,
        python=sys.executable,
    )
