"""``workspace serve``: the backend, the scheduler loop and the release watcher in one process.

Takes the flags of ``workspace backend``; ``--cwd`` defaults to the workspace root,
since the ticks run that workspace's tasks against this backend. The watcher runs only when
``workspace.toml`` has ``[[workspace.sources]]``. See :mod:`workspace_adapter.loops` for the
loops and the shutdown order.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Unpack

from workspace_adapter.base.errors import UserError
from workspace_adapter.client import TOKEN_ENV
from workspace_adapter.commands.backend import BackendFlags, backend_options
from workspace_adapter.local import configfile

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals
    from workspace_adapter.service.watcher import Watcher


def serve(g: Globals, *, tick_interval: float | None = None, **flags: Unpack[BackendFlags]) -> int:
    from workspace_adapter.base import logs
    from workspace_adapter.loops import TICK_INTERVAL_SECONDS, run_serve

    logs.configure(g.log_level)
    interval = TICK_INTERVAL_SECONDS if tick_interval is None else tick_interval
    if interval <= 0:
        raise UserError(f"--tick-interval must be positive, got {interval:g}")
    # Read now, so a broken workspace.toml stops serve at start with its one-line error; each
    # tick reads it again, so later edits apply without a restart.
    config = configfile.load(g.workspace_root)
    options = backend_options(flags, default_cwd=config.root)
    if options.token and not os.environ.get(TOKEN_ENV):
        # The loops reach the backend through the client, which reads the token from the
        # environment; a token given by file would otherwise lock them out.
        os.environ[TOKEN_ENV] = options.token

    def watcher_for(url: str) -> Watcher:
        from workspace_adapter.service.records import Records
        from workspace_adapter.service.watcher import Watcher

        return Watcher(config, Records.for_workspace(config.root).open(), url)

    return run_serve(
        options,
        g,
        tick_interval=interval,
        make_watcher=watcher_for if config.sources else None,
    )
