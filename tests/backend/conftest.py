"""Fixtures of the backend tests: a daemon shared per module, started on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.backend import SECRET, Backend
from support.flows import write_flows


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A daemon shared by one test module (tests use their own event ids), with a secret."""
    base = tmp_path_factory.mktemp("backend")
    root = write_flows(base / "ws")
    secret = base / "secret"
    secret.write_text(SECRET + "\n")
    daemon = Backend(root, base / "data", "--secret-file", str(secret), "--concurrency", "8")
    daemon.start()
    yield daemon
    code = daemon.stop()
    assert code == 0, daemon.stderr()
