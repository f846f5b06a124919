"""The flow packages a daemon serves: discovered once, rechecked when their files change.

The packages are the workspace's own and the built-in ones; workspace.toml's forks decide what
the built-in fork-maintenance flow matches, so its changes count as flow changes too.

A :class:`FlowCatalog` answers the two questions a dispatch and a run ask, "which steps does
this event start" and "which package and step does this stored run name", without reading the
flow folders on every event: it looks at their modification times at most once per
``recheck_seconds`` and reloads only when one changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.paths import CONFIG_CANDIDATES
from workspace_adapter.flows.package import (
    FLOW_DIRS,
    FlowDiscovery,
    FlowPackage,
    FlowStep,
    discover_flows,
)

# How often a lookup may look at the flow folders for edits.
DEFAULT_RECHECK_SECONDS = 1.0

StepMatch = tuple[FlowPackage, FlowStep]


class FlowCatalog:
    """The flow packages under a workspace root, reloaded when a ``flow.toml`` changes.

    ``recheck_seconds`` bounds how stale the catalog may be (0: look on every lookup);
    ``clock`` is the monotonic clock it measures that with.
    """

    def __init__(
        self,
        root: Path,
        *,
        recheck_seconds: float = DEFAULT_RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.recheck_seconds = recheck_seconds
        self._clock = clock
        self._log = get_logger(component="flows")
        self._stamp = self._fingerprint()
        self._checked = clock()
        self.discovery = self._discover()

    def _discover(self) -> FlowDiscovery:
        discovery = discover_flows(self.root)
        for error in discovery.errors:
            self._log.warning("flow.invalid", problem=str(error))
        for warning in discovery.warnings:
            self._log.warning("flow.unknown_key", problem=warning)
        # Steps by trigger type, so an event no flow wants costs one dict lookup.
        self._by_type: dict[str, list[StepMatch]] = {}
        for package in discovery.packages:
            for step in package.steps:
                if step.trigger_type is not None:  # a step without a trigger never matches
                    self._by_type.setdefault(step.trigger_type, []).append((package, step))
        return discovery

    def _fingerprint(self) -> tuple[tuple[str, int], ...]:
        stamps: list[tuple[str, int]] = []
        # workspace.toml's forks are bound to packages (the built-in flow serves them).
        for name in CONFIG_CANDIDATES:
            try:
                stamps.append((str(self.root / name), (self.root / name).stat().st_mtime_ns))
            except OSError:
                continue
        for sub in FLOW_DIRS:
            base = self.root / sub
            if not base.is_dir():
                continue
            stamps.append((str(base), base.stat().st_mtime_ns))
            for folder in base.iterdir():
                for name in ("flow.toml", "schemas", "."):
                    try:
                        stamps.append((str(folder / name), (folder / name).stat().st_mtime_ns))
                    except OSError:
                        continue
        return tuple(sorted(stamps))

    def refresh(self, *, force: bool = False) -> bool:
        """Reload if the flow folders changed (looked at once per interval unless ``force``).

        Returns True when the catalog reloaded.
        """
        now = self._clock()
        if not force and now - self._checked < self.recheck_seconds:
            return False
        self._checked = now
        stamp = self._fingerprint()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        self.discovery = self._discover()
        self._log.info("flows.reloaded", packages=len(self.discovery.packages))
        return True

    def packages(self) -> list[FlowPackage]:
        """The packages as of the last recheck."""
        self.refresh()
        return self.discovery.packages

    def matching(self, event: dict[str, Any]) -> list[StepMatch]:
        """Every step, in package order, whose trigger type and payload schema fit ``event``."""
        self.refresh()
        kind = event.get("type")
        candidates = self._by_type.get(kind) if isinstance(kind, str) else None
        if not candidates:
            return []
        return [(p, s) for p, s in candidates if s.accepts(event)]

    def find(self, flow_name: str, step_name: str) -> StepMatch | None:
        """The package and step a stored run names, if they still exist."""
        package = next((p for p in self.packages() if p.name == flow_name), None)
        if package is None:
            return None
        step = next((s for s in package.steps if s.name == step_name), None)
        return None if step is None else (package, step)
