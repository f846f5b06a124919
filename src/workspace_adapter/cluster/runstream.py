"""The Redis keys of one run on the cluster, and the entries of its stream.

Per run: a stream (``…:out``, capped at :data:`STREAM_MAXLEN` entries) where the worker writes
``start`` (which worker, which step process), each ``line`` the step prints, and ``end`` (the
outcome); ``…:done`` holding the outcome once the run ended (so a redelivered message, or a
backend that comes back, finds it); ``…:cancel``, set by the backend; ``…:lock`` and ``…:beat``,
the lease that lets one execution of the run at a time start (see
:mod:`~workspace_adapter.cluster.lease`). Fork locks live beside them, keyed by the fork's
repository name.
"""

from __future__ import annotations

from typing import Any

import msgspec

from workspace_adapter.flows.runner import StepOutcome

PREFIX = "workspace:"
STREAM_MAXLEN = 10_000
"""Entries kept per run stream: lines past it are trimmed (the outcome keeps the tails)."""
DONE_TTL_SECONDS = 7 * 24 * 3600
"""How long a run's end, cancel mark and stream stay in Redis after it ended."""
CANCEL_TTL_SECONDS = 7 * 24 * 3600


class RunKeys:
    """The keys of one run (see the module docstring)."""

    __slots__ = ("beat", "cancel", "done", "lock", "stream")

    def __init__(self, run_id: str) -> None:
        base = f"{PREFIX}run:{run_id}:"
        self.stream = base + "out"
        self.done = base + "done"
        self.cancel = base + "cancel"
        self.lock = base + "lock"
        self.beat = base + "beat"


def fork_lock_key(repository: str) -> str:
    """The cluster-wide lock of one fork, by its repository name (never a path)."""
    return f"{PREFIX}fork:{repository}:lock"


def worker_key(name: str) -> str:
    return f"{PREFIX}worker:{name}"


WORKERS_PATTERN = f"{PREFIX}worker:*"


def start_entry(worker: str, pid: int, token: str) -> dict[str, str]:
    return {"k": "start", "w": worker, "pid": str(pid), "t": token}


def line_entry(stream: str, line: str) -> dict[str, str]:
    return {"k": "line", "s": "e" if stream == "stderr" else "o", "l": line}


def end_entry(worker: str, outcome: StepOutcome) -> dict[str, str | bytes]:
    return {"k": "end", "w": worker, "o": msgspec.json.encode(outcome)}


def decode_outcome(raw: bytes | str) -> StepOutcome:
    return msgspec.json.decode(raw, type=StepOutcome)


class Entry:
    """One decoded stream entry: ``kind`` is start, line or end."""

    __slots__ = ("fields", "id", "kind")

    def __init__(self, entry_id: str, fields: dict[Any, Any]) -> None:
        self.id = entry_id
        self.fields = {_text(k): v for k, v in fields.items()}
        self.kind = _text(self.fields.get("k", b""))

    def text(self, name: str) -> str:
        return _text(self.fields.get(name, b""))

    @property
    def stream(self) -> str:
        return "stderr" if self.text("s") == "e" else "stdout"

    def outcome(self) -> StepOutcome:
        return decode_outcome(self.fields["o"])


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
