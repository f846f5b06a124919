"""flows/catalog.py: discovery, rechecks on the clock it is given, and event matching."""

from __future__ import annotations

import textwrap
from pathlib import Path

from workspace_adapter.flows.catalog import FlowCatalog

MANIFEST = """
    name = "{name}"
    [[steps]]
    name = "step"
    runner = "command"
    command = ["true"]
    [steps.trigger]
    type = "{trigger}"
"""


def write(root: Path, name: str, trigger: str) -> None:
    folder = root / "flows" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.toml").write_text(textwrap.dedent(MANIFEST.format(name=name, trigger=trigger)))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def names(catalog: FlowCatalog, event_type: str) -> list[str]:
    return [p.name for p, _ in catalog.matching({"id": "e", "type": event_type})]


def test_matching_by_trigger_type(tmp_path: Path) -> None:
    write(tmp_path, "a", "release")
    write(tmp_path, "b", "release")
    write(tmp_path, "c", "other")
    catalog = FlowCatalog(tmp_path)
    assert sorted(names(catalog, "release")) == ["a", "b"]
    assert names(catalog, "nobody.wants.this") == []
    found = catalog.find("c", "step")
    assert found is not None and found[1].trigger_type == "other"
    assert catalog.find("c", "nope") is None and catalog.find("nope", "step") is None


def test_edits_are_seen_once_the_interval_passed(tmp_path: Path) -> None:
    write(tmp_path, "a", "release")
    clock = Clock()
    catalog = FlowCatalog(tmp_path, recheck_seconds=1.0, clock=clock)
    write(tmp_path, "late", "late.event")
    assert names(catalog, "late.event") == []  # within the interval: not looked at
    clock.now += 1.0
    assert names(catalog, "late.event") == ["late"]


def test_a_zero_interval_looks_every_time(tmp_path: Path) -> None:
    catalog = FlowCatalog(tmp_path, recheck_seconds=0)
    assert catalog.packages() == []
    write(tmp_path, "new", "new.event")
    assert names(catalog, "new.event") == ["new"]
    assert not catalog.refresh()  # nothing changed since


def test_forced_refresh_ignores_the_interval(tmp_path: Path) -> None:
    catalog = FlowCatalog(tmp_path, recheck_seconds=3600, clock=Clock())
    write(tmp_path, "new", "new.event")
    assert catalog.refresh(force=True)
    assert names(catalog, "new.event") == ["new"]
