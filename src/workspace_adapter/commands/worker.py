"""``workspace worker``: a Celery worker that runs flow steps sent by a backend (Redis broker)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from workspace_adapter.base.errors import EXIT_BAD_INPUT, UserError
from workspace_adapter.base.globals import Globals
from workspace_adapter.cluster.brokerurl import BROKER_ENV, broker_problem, chosen_broker

if TYPE_CHECKING:
    from workspace_adapter.local.config import ExecutorConfig

CELERY_MISSING = (
    "the Celery executor needs the celery extra: pip install 'workspace-adapter[celery]'"
)


def configured_executor(root: Path, *, unreadable_ok: bool = False) -> ExecutorConfig | None:
    """workspace.toml's ``[workspace.executor]``, None without one (or without the file);
    ``unreadable_ok``: None too for a file that does not check (someone else reports it)."""
    from workspace_adapter.local.config import ConfigError
    from workspace_adapter.local.configfile import config_path, load_cached

    if config_path(root) is None:
        return None
    try:
        return load_cached(root, write=False).executor
    except ConfigError:
        if unreadable_ok:
            return None
        raise


def broker_for(flag: str | None, configured: ExecutorConfig | None) -> str:
    """The broker in force (``--broker``, the variable, workspace.toml); exit 2 if none or bad."""
    broker = chosen_broker(flag, configured.broker if configured is not None else None)
    if broker is None:
        raise UserError(
            f"no broker: pass --broker redis://HOST:PORT/DB, set {BROKER_ENV}, or set "
            "[workspace.executor] broker in workspace.toml",
            EXIT_BAD_INPUT,
        )
    problem = broker_problem(broker)
    if problem is not None:
        raise UserError(f"--broker: {problem}", EXIT_BAD_INPUT)
    return broker


def worker(
    g: Globals,
    *,
    broker: str | None,
    concurrency: int,
    queues: list[str],
    name: str | None,
) -> int:
    if concurrency < 1:
        raise UserError(f"--concurrency must be at least 1, got {concurrency}", EXIT_BAD_INPUT)
    root = g.workspace_root.resolve()
    if not root.is_dir():
        raise UserError(f"--workspace-root {root} is not a folder", EXIT_BAD_INPUT)
    url = broker_for(broker, configured_executor(root))
    try:
        from workspace_adapter.cluster.execution import default_name
        from workspace_adapter.cluster.worker import run_worker
    except ImportError:
        raise UserError(CELERY_MISSING, EXIT_BAD_INPUT) from None
    from workspace_adapter.base import logs

    logs.configure(g.log_level)
    return run_worker(
        broker=url,
        root=root,
        name=name or default_name(),
        concurrency=concurrency,
        queues=[q for part in queues for q in part.split(",") if q] or ["workspace"],
    )
