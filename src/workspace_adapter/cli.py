"""The one place that wires the command line: every command, its flags, and its module.

Each command lives in ``workspace_adapter.commands.<name>`` as a function that takes parsed
values and returns an exit code. Modules are imported only when their command runs, so a
quick command does not pay for the daemon's imports.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Globals:
    """The flags every command accepts (SPEC §2)."""

    workspace_root: Path
    backend_url: str
    mode: str
    log_level: str


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    # Defaults live on the top-level parser only, so a flag given after the subcommand is
    # not overwritten by the subparser's default (and vice versa).
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--workspace-root", default=default, metavar="PATH", help="workspace root folder"
    )
    parser.add_argument(
        "--backend-url",
        default=default,
        metavar="URL",
        help="backend WebSocket URL (default: $CODEX_WORKSPACE_BACKEND_WS_URL or ws://127.0.0.1:3586)",
    )
    parser.add_argument("--mode", default=default, choices=("local", "actions"))
    parser.add_argument(
        "--log-level", default=default, choices=("debug", "info", "warning", "error")
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workspace", description="Keep a fork rebased on its upstream's releases."
    )
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
        return p

    p = add("run", "run one task now, scheduled or not")
    p.add_argument("task_id", metavar="TASK")
    p.add_argument("--event", metavar="FILE", help="replace the event's type and payload")
    p.add_argument("--no-wait", action="store_true", help="flow tasks: do not follow the runs")
    p.add_argument("--json", action="store_true", help="print one JSON document")

    p = add("tick", "run the scheduled tasks that are due; explain each decision")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("--json", action="store_true")

    p = add("doctor", "check config, flows, tools, git remotes, state, backend; never writes")
    p.add_argument("--json", action="store_true")

    p = add("runs", "local run history")
    p.add_argument("task_id", nargs="?", metavar="TASK")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")

    p = add("flow", "flow packages: run one in this process, or list them")
    flow_sub = p.add_subparsers(dest="flow_command", metavar="ACTION")
    flow_sub.required = True
    fr = flow_sub.add_parser("run", help="run a flow's matching steps here, no backend")
    _common(fr, top=False)
    fr.add_argument("name", metavar="NAME")
    fr.add_argument("--event", metavar="FILE", help="event JSON (default: the flow's fixture)")
    fr.add_argument("--json", action="store_true", help="print the FlowResult as JSON")
    fl = flow_sub.add_parser("list", help="list flow packages")
    _common(fl, top=False)
    fl.add_argument("--json", action="store_true")

    p = add("harness", "the local harness repos (SPEC §8)")
    h_sub = p.add_subparsers(dest="harness_command", metavar="ACTION")
    h_sub.required = True
    hi = h_sub.add_parser("init", help="build harness/ (upstream, fork, bare remotes)")
    _common(hi, top=False)
    hi.add_argument("--force", action="store_true", help="replace an existing harness/")
    hr = h_sub.add_parser("release", help="cut an upstream release")
    _common(hr, top=False)
    hr.add_argument("--bump", choices=("patch", "minor"), default="patch")
    hr.add_argument("--conflict", action="store_true", help="touch the same lines as a fork commit")
    return parser


def _globals(ns: argparse.Namespace) -> Globals:
    from workspace_adapter import paths

    return Globals(
        workspace_root=paths.resolve_root(ns.workspace_root),
        backend_url=ns.backend_url or paths.default_backend_url(),
        mode=ns.mode or paths.default_mode(),
        log_level=ns.log_level or "warning",
    )


def _dispatch(ns: argparse.Namespace, g: Globals) -> int:
    command: str = ns.command
    if command == "run":
        from workspace_adapter.commands import run

        return run.run(g, ns.task_id, event_file=ns.event, wait=not ns.no_wait, as_json=ns.json)
    if command == "tick":
        from workspace_adapter.commands import tick

        return tick.tick(g, dry_run=ns.dry_run, as_json=ns.json)
    if command == "doctor":
        from workspace_adapter.commands import doctor

        return doctor.doctor(g, as_json=ns.json)
    if command == "runs":
        from workspace_adapter.commands import runs

        return runs.runs(g, ns.task_id, limit=ns.limit, as_json=ns.json)
    if command == "flow":
        from workspace_adapter.commands import flow

        if ns.flow_command == "run":
            return flow.flow_run(g, ns.name, event_file=ns.event, as_json=ns.json)
        return flow.flow_list(g, as_json=ns.json)
    if command == "harness":
        from workspace_adapter.commands import harness

        if ns.harness_command == "init":
            return harness.init(g, force=ns.force)
        return harness.release(g, bump=ns.bump, conflict=ns.conflict)
    raise AssertionError(f"unwired command {command}")


def main(argv: Sequence[str] | None = None) -> int:
    from workspace_adapter.errors import error_handler

    parser = build_parser()
    ns = parser.parse_args(argv)
    g = _globals(ns)
    try:
        with error_handler(g.workspace_root):
            return _dispatch(ns, g)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else 1


if __name__ == "__main__":
    sys.exit(main())
