"""The full command-line parser: every command, its flags and its help, built with argparse.

:func:`build_parser` builds it (or just one command's part: building all of them costs more
than a quick ``workspace run`` may spend). :data:`COMMANDS` lists every command with its
one-line help, in the help's order. The plain forms of ``run`` and ``tick`` never get here:
:func:`workspace_adapter.cli.quick_parse` reads them without argparse.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    from workspace_adapter.base.paths import DEFAULT_BACKEND_HOST, DEFAULT_BACKEND_PORT

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
        help=(
            "backend WebSocket URL (default: $CODEX_WORKSPACE_BACKEND_WS_URL or "
            f"ws://{DEFAULT_BACKEND_HOST}:{DEFAULT_BACKEND_PORT})"
        ),
    )
    parser.add_argument(
        "--mode",
        default=default,
        choices=("local", "actions"),
        help="run state under .workspace/<mode>/ (default local; actions under GitHub Actions)",
    )
    parser.add_argument(
        "--log-level",
        default=default,
        choices=("debug", "info", "warning", "error"),
        help="log to stderr from this level (default warning; info for backend, serve, watch)",
    )
    parser.add_argument(
        "--log-format",
        default=default,
        choices=("json", "console"),
        help="log lines as JSON or for reading (default: console on a terminal, else json)",
    )


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task_id", metavar="TASK", help="the task's id in workspace.toml")
    p.add_argument("--event", metavar="FILE", help="replace the event's type and payload")
    p.add_argument("--no-wait", action="store_true", help="flow tasks: do not follow the runs")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def _tick_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _json_only(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _runs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task_id", nargs="?", metavar="TASK", help="only this task's runs")
    p.add_argument("--limit", type=int, default=20, help="at most N entries (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _flow_args(p: argparse.ArgumentParser) -> None:
    flow_sub = p.add_subparsers(
        dest="flow_command", metavar="ACTION", help="run: one flow here; list: every flow found"
    )
    flow_sub.required = True
    text = "run a flow's matching steps here, no backend"
    fr = flow_sub.add_parser("run", help=text, description=text)
    _common(fr, top=False)
    fr.add_argument("name", metavar="NAME", help="the flow package's name (see `flow list`)")
    fr.add_argument("--event", metavar="FILE", help="event JSON (default: the flow's fixture)")
    fr.add_argument(
        "--fork", metavar="NAME", help="a [[workspace.forks]] entry: run one release, no event file"
    )
    fr.add_argument("--tag", metavar="TAG", help="with --fork: the upstream release tag")
    fr.add_argument(
        "--continue-past-conflicts",
        action="store_true",
        help="a patch series: skip a patch that conflicts and try the rest, to report them all",
    )
    fr.add_argument("--json", action="store_true", help="print the FlowResult as JSON")
    fr.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="every command the step runs and the tools' full output (CODEX_FLOW_VERBOSE=1)",
    )
    text = "list flow packages (.codex/flows/*, then flows/*) and their load errors"
    fl = flow_sub.add_parser("list", help=text, description=text)
    _common(fl, top=False)
    fl.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _harness_args(p: argparse.ArgumentParser) -> None:
    h_sub = p.add_subparsers(dest="harness_command", metavar="ACTION", help="init or release")
    h_sub.required = True
    text = "build harness/ (upstream, fork, bare remotes), deterministically"
    hi = h_sub.add_parser("init", help=text, description=text)
    _common(hi, top=False)
    hi.add_argument("--force", action="store_true", help="replace an existing harness/")
    hi.add_argument(
        "--patches", action="store_true", help="a fork kept as three patch branches instead"
    )
    hi.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    text = "cut an upstream release: bump, commit, tag, push to its bare remote"
    hr = h_sub.add_parser("release", help=text, description=text)
    _common(hr, top=False)
    hr.add_argument(
        "--bump", choices=("patch", "minor"), default="patch", help="version part (default patch)"
    )
    hr.add_argument("--conflict", action="store_true", help="touch the same lines as a fork commit")
    hr.add_argument(
        "--patches",
        action="store_true",
        help="the patch harness's next case: absorb a patch, then conflict with one",
    )
    hr.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fork", metavar="PATH", help="the fork checkout (default: the current folder)")
    p.add_argument("--upstream", metavar="URL", help="add this upstream remote when none is found")
    p.add_argument("--force", action="store_true", help="replace an existing workspace.toml")
    p.add_argument(
        "--harness", action="store_true", help="set up the tutorial instead (as `harness init`)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _backend_args(p: argparse.ArgumentParser) -> None:
    from workspace_adapter.base.paths import DEFAULT_BACKEND_HOST, DEFAULT_BACKEND_PORT

    p.add_argument("--host", help=f"address to bind (default {DEFAULT_BACKEND_HOST})")
    p.add_argument(
        "--port", type=int, help=f"port (default {DEFAULT_BACKEND_PORT}; 0 picks a free one)"
    )
    p.add_argument("--cwd", metavar="ROOT", help="workspace root holding flows/")
    p.add_argument(
        "--data-dir", metavar="DIR", help="store folder (default ROOT/.workspace/backend)"
    )
    p.add_argument("--token-file", metavar="FILE", help="bearer token clients must send")
    p.add_argument("--secret-file", metavar="FILE", help="HMAC secret for POST /events")
    p.add_argument(
        "--allow-origin", action="append", default=[], metavar="ORIGIN", help="allow a browser"
    )
    p.add_argument(
        "--public-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name clients reach the backend by (the Host header); repeatable, required to "
        "listen beyond loopback (default: $CODEX_WORKSPACE_BACKEND_PUBLIC_HOST, comma-separated)",
    )
    p.add_argument("--concurrency", type=int, default=2, help="runs at once (default 2)")
    p.add_argument(
        "--env-allow", action="append", default=[], metavar="NAME", help="pass NAME to steps"
    )
    p.add_argument(
        "--app-server-url",
        metavar="URL",
        help="Codex app-server (ws://…) behind appServer.* (default: "
        "$CODEX_WORKSPACE_BACKEND_APP_SERVER_URL, then $CODEX_WORKSPACE_APP_SERVER_WS_URL)",
    )
    p.add_argument(
        "--local-app-server", action="store_true", help="refused: start one and pass its URL"
    )
    p.add_argument(
        "--executor",
        choices=("local", "direct", "celery"),
        help="where steps run: local subprocesses (direct is the same) or Celery workers "
        "(default: [workspace.executor] in workspace.toml, else local)",
    )
    p.add_argument(
        "--broker",
        metavar="URL",
        help="Redis broker of the Celery executor, redis://[:PASSWORD@]HOST:PORT/DB (default: "
        "$CODEX_WORKSPACE_BROKER_URL, then [workspace.executor] broker)",
    )


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        metavar="URL",
        help="Redis broker, redis://[:PASSWORD@]HOST:PORT/DB (default: "
        "$CODEX_WORKSPACE_BROKER_URL, then [workspace.executor] broker)",
    )
    p.add_argument("--concurrency", type=int, default=2, help="steps at once (default 2)")
    p.add_argument(
        "--queues",
        action="append",
        default=[],
        metavar="Q",
        help="queues to take runs from, comma-separated or repeated (default workspace)",
    )
    p.add_argument("--name", metavar="NAME", help="this worker's name (default workspace-PID@HOST)")


def _serve_args(p: argparse.ArgumentParser) -> None:
    _backend_args(p)
    # Hidden: tests tick every fraction of a second instead of every minute.
    p.add_argument("--tick-interval", type=float, metavar="SECONDS", help=argparse.SUPPRESS)


def _dispatch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the event as a JSON file; - reads stdin")
    p.add_argument("--wait", action="store_true", help="follow the runs to their end")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("event_id", metavar="EVENT_ID", help="a stored event (workspace events)")
    p.add_argument("--wait", action="store_true", help="follow the runs to their end")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _events_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", dest="event_type", metavar="TYPE", help="only events of this type")
    p.add_argument("--limit", type=int, default=20, help="at most N entries (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _flow_runs_args(p: argparse.ArgumentParser) -> None:
    from workspace_adapter.base.status import RUN_STATES

    p.add_argument("--event-id", metavar="ID", help="only the runs of this event")
    p.add_argument(
        "--status",
        choices=sorted(RUN_STATES),
        help="only runs in this status",
    )
    p.add_argument("--limit", type=int, default=20, help="at most N entries (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _cancel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID", help="a backend run (workspace flow-runs)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID", help="a backend run (workspace flow-runs)")
    p.add_argument(
        "--follow", action="store_true", help="stream its output until it ends, as run does"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _watch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument(
        "--json", action="store_true", help="with --once: the pass's report as one JSON document"
    )


def _attempts_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action", nargs="?", choices=("retry", "replay"), help="omit to list the attempts"
    )
    p.add_argument("attempt_id", nargs="?", metavar="ID", help="the attempt to retry or replay")
    p.add_argument(
        "--status",
        metavar="S",
        help="list: only attempts with this status (undelivered, started, skipped, completed, "
        "changed, needs_intervention, blocked, failed, canceled)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--older-than", default="30d", metavar="AGE", help="e.g. 12h, 30d (default 30d)")
    p.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument(
        "--vacuum", action="store_true", help="also shrink the files (not while a backend runs)"
    )
    p.add_argument(
        "--data-dir", metavar="DIR", help="backend store folder (default ROOT/.workspace/backend)"
    )
    # Hidden: tests wait a fraction of a second for a locked store instead of 5 s.
    p.add_argument("--busy-timeout", type=float, default=5.0, help=argparse.SUPPRESS)


# Every command: its one-line help and what adds its own arguments. Order is the help's order.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("run one task now, scheduled or not", _run_args),
    "tick": ("run the scheduled tasks that are due; explain each decision", _tick_args),
    "doctor": (
        "check config, flows, tools, git remotes, state, backend; never writes",
        _json_only,
    ),
    "runs": ("local run history", _runs_args),
    "tasks": ("the tasks of workspace.toml: kind, schedule, last run, next due", _json_only),
    "init": ("set up a workspace for the fork checkout here (or --fork PATH)", _init_args),
    "flow": ("flow packages: run one in this process, or list them", _flow_args),
    "harness": ("the tutorial's local harness repos", _harness_args),
    "backend": ("the workspace backend daemon (JSON-RPC over WebSocket + HTTP)", _backend_args),
    "serve": ("backend + scheduler loop + release watcher, in one process", _serve_args),
    "worker": ("a Celery worker that runs flow steps for a backend (Redis)", _worker_args),
    "dispatch": ("send an event (JSON file, - for stdin) to the backend", _dispatch_args),
    "replay": ("run a stored event again", _replay_args),
    "events": ("events the backend stored, newest first", _events_args),
    "flow-runs": ("runs the backend recorded, newest first", _flow_runs_args),
    "cancel": ("cancel a queued or running backend run", _cancel_args),
    "watch": ("poll the release sources, dispatch and follow attempts", _watch_args),
    "attempts": ("maintenance attempts: list them, or retry / replay one", _attempts_args),
    "show": ("one backend run; --follow streams it until it ends", _show_args),
    "prune": ("drop old runs, events and outputs from the stores", _prune_args),
}

# Top-level flags that take a value, to skip it when looking for the command's name.
_VALUE_FLAGS = frozenset(
    ("--workspace-root", "--backend-url", "--mode", "--log-level", "--log-format")
)


def command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, when it names a known one before any help flag."""
    tokens = iter(argv)
    for token in tokens:
        if token in _VALUE_FLAGS:
            next(tokens, None)
        elif not token.startswith("-"):
            return token if token in COMMANDS else None
        elif token.split("=", 1)[0] not in _VALUE_FLAGS:
            return None  # -h, --help, or a flag argparse should report with the full parser
    return None


def installed_version() -> str:
    """The installed distribution's version (the package's own when it is not installed)."""
    from importlib import metadata

    from workspace_adapter import __version__

    try:
        return metadata.version("workspace-adapter")
    except metadata.PackageNotFoundError:
        return __version__


def _version_action() -> type:
    class Version(argparse.Action):
        """``--version``: looks the version up only when asked."""

        def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
            super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

        def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
            print(f"workspace {installed_version()}")
            parser.exit()

    return Version


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that command's subparser.

    Building all of them costs more than a quick ``workspace run`` may spend, so
    :func:`workspace_adapter.cli.main` builds the one the command line names, and every one
    for help or an error.
    """
    parser = argparse.ArgumentParser(
        prog="workspace", description="Keep a fork rebased on its upstream's releases."
    )
    _common(parser, top=True)
    parser.add_argument("--version", action=_version_action(), help="print the installed version")
    # prog given: argparse would otherwise build a help formatter (and import shutil) to make it.
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", prog="workspace", help="`workspace COMMAND -h` for more"
    )
    sub.required = True
    for name, (help_text, add_arguments) in COMMANDS.items():
        if only is None or name == only:
            p = sub.add_parser(name, help=help_text, description=help_text)
            _common(p, top=False)
            add_arguments(p)
    return parser
