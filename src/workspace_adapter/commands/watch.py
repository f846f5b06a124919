"""``workspace watch [--once]``: the release watcher of SPEC §9.

Each pass polls the due ``[[workspace.sources]]``, records what it saw in DATA_DIR, opens a
maintenance attempt per new release, delivers it to the backend, follows the runs and folds
their outcome into the attempt. ``--once`` runs one pass and exits with the worst outcome's
code (SPEC §2: 4 when the backend was not reachable, 1 when a source or an attempt failed, 3
when an attempt needs a person); without it the watcher runs until SIGINT or SIGTERM, exit 0.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from workspace_adapter.base.errors import EXIT_BAD_INPUT, UserError
from workspace_adapter.local import config as config_mod

if TYPE_CHECKING:
    from workspace_adapter.cli import Globals


def watch(g: Globals, once: bool) -> int:
    import anyio

    from workspace_adapter.base import logs
    from workspace_adapter.service.records import Records
    from workspace_adapter.service.watcher import Watcher

    logs.configure(g.log_level)
    config = config_mod.load(g.workspace_root)
    if not config.sources:
        raise UserError(
            f"{config.display_path}: workspace.sources: no source to watch; add a "
            '[[workspace.sources]] entry (id, kind = "git-tags" or "feed", url, repo)',
            EXIT_BAD_INPUT,
        )
    records = Records.for_workspace(config.root).open()
    watcher = Watcher(config, records, g.backend_url)
    return anyio.run(watcher.run_once if once else watcher.run_forever)


def main(argv: list[str] | None = None) -> int:
    """``python -m workspace_adapter.commands.watch [--once]``, with the common flags."""
    import argparse

    from workspace_adapter.base import paths
    from workspace_adapter.base.errors import error_handler
    from workspace_adapter.cli import Globals

    parser = argparse.ArgumentParser(prog="workspace watch")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument("--workspace-root", metavar="PATH")
    parser.add_argument("--backend-url", metavar="URL")
    parser.add_argument("--log-level", default="warning")
    ns = parser.parse_args(argv)
    g = Globals(
        workspace_root=paths.resolve_root(ns.workspace_root),
        backend_url=ns.backend_url or paths.default_backend_url(),
        mode=paths.default_mode(),
        log_level=ns.log_level,
    )
    try:
        with error_handler(g.workspace_root):
            return watch(g, ns.once)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


if __name__ == "__main__":
    sys.exit(main())
