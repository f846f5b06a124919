"""``workspace watch [--once]``: the release watcher.

Each pass polls the due ``[[workspace.sources]]``, records what it saw in DATA_DIR, opens a
maintenance attempt per new release, delivers it to the backend, follows the runs and folds
their outcome into the attempt. ``--once`` runs one pass and exits with the worst outcome's
code (docs/statuses.md: 4 when the backend was not reachable, 1 when a source or an attempt
failed, 3 when an attempt needs a person); without it the watcher runs until SIGINT or
SIGTERM, exit 0. ``--once --json`` prints the pass's report as one document (see :func:`watch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workspace_adapter.base.errors import EXIT_BACKEND_UNREACHABLE, EXIT_BAD_INPUT, UserError
from workspace_adapter.local import configfile

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals


def watch(g: Globals, once: bool, as_json: bool = False) -> int:
    """``--json`` (with ``--once``): one document on stdout, the pass's report::

        {"exitCode": 0, "sourceFailures": 0, "attempts": [<attempt>, ...]}

    each attempt in the shape ``workspace attempts --json`` prints; the progress lines go to
    stderr instead.
    """
    import sys

    import anyio

    from workspace_adapter.base import logs
    from workspace_adapter.service.records import Records
    from workspace_adapter.service.watcher import PassReport, Watcher

    logs.configure(g.log_level)
    config = configfile.load(g.workspace_root)
    if not config.sources:
        raise UserError(
            f"{config.display_path}: workspace.sources: no source to watch; add a "
            '[[workspace.sources]] entry (id, kind = "git-tags" or "feed", url, repo)',
            EXIT_BAD_INPUT,
        )
    if as_json and not once:
        raise UserError("watch --json reports one pass: add --once", EXIT_BAD_INPUT)
    records = Records.for_workspace(config.root).open()
    if not as_json:
        watcher = Watcher(config, records, g.backend_url)
        return anyio.run(watcher.run_once if once else watcher.run_forever)
    import msgspec

    watcher = Watcher(config, records, g.backend_url, out=sys.stderr)

    async def one_pass() -> PassReport:
        return await watcher.run_pass(everything=True)

    report = anyio.run(one_pass)
    code = report.exit_code()
    document = {
        "exitCode": code,
        "sourceFailures": report.source_failures,
        "attempts": report.attempts,
    }
    sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
    if code == EXIT_BACKEND_UNREACHABLE:
        print(
            f"error: backend not reachable at {g.backend_url}; start it with "
            "`workspace backend` (`workspace watch` delivers what is waiting)",
            file=sys.stderr,
        )
    return code
