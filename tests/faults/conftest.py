"""Fixtures of the fault-injection tests: real daemons on free ports, real SQLite, real processes.

What tests/backend and tests/flows already cover is not repeated here:

* SIGKILL of the backend while a step runs, recovery on restart:
  ``tests/backend/test_backend_lifecycle.py::test_sigkill_mid_run_is_recovered_on_restart``
* a subscriber that never reads (50 MB of output streaming) is closed with 1008 while RSS stays
  bounded: ``tests/backend/test_backend_lifecycle.py::test_a_subscriber_that_never_reads_is_closed``
* a step ignoring SIGTERM is killed after the grace, in-process:
  ``tests/flows/test_step_runner.py::test_a_step_ignoring_sigterm_is_killed_after_the_grace``
* a 50 MB flood keeps the runner's memory bounded, in-process:
  ``tests/flows/test_step_runner.py::test_a_50_mb_flood_keeps_memory_bounded``
* bad frames and oversized frames: ``tests/backend/test_backend_ws.py``
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.backend import Backend
from support.flows import write_flows


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_flows(tmp_path / "ws")


@pytest.fixture
def daemon(root: Path, tmp_path: Path) -> Iterator[Backend]:
    backend = Backend(root, tmp_path / "data", "--concurrency", "4").start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """One daemon for a whole module (its tests use their own ids)."""
    base = tmp_path_factory.mktemp("faults")
    backend = Backend(write_flows(base / "ws"), base / "data", "--concurrency", "4").start()
    yield backend
    code = backend.stop()
    assert code == 0, backend.stderr()
