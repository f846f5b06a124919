"""The one place that wires the command line: every command, its flags, and its module.

Each command lives in ``workspace_adapter.commands.<name>`` as a function that takes parsed
values and returns an exit code. Modules are imported only when their command runs, so a
quick command does not pay for the daemon's imports. The plain forms of ``run`` and ``tick``
are read by :func:`quick_parse` without argparse (which, with the help formatter it builds for
every argument, costs about as much as either command's whole budget); anything else, help and
errors included, goes through the full parser.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from workspace_adapter.base.globals import Globals

    Parsed = argparse.Namespace | SimpleNamespace


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    import argparse

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
    import argparse

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
    import argparse

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
    import argparse

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
    :func:`main` builds the one the command line names, and every one for help or an error.
    """
    import argparse

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


# The common flags' choices, for the quick parse (argparse checks them on the full one).
_CHOICES: dict[str, tuple[str, ...] | None] = {
    "--workspace-root": None,
    "--backend-url": None,
    "--mode": ("local", "actions"),
    "--log-level": ("debug", "info", "warning", "error"),
    "--log-format": ("json", "console"),
}
# The switches of the commands the quick parse reads, and their attribute names.
_SWITCHES = {
    "run": {"--no-wait": "no_wait", "--json": "json"},
    "tick": {"--dry-run": "dry_run", "--json": "json"},
}


def quick_parse(argv: Sequence[str]) -> SimpleNamespace | None:
    """``argv`` parsed as argparse would, when it is a plain ``run`` or ``tick``; else None.

    Plain: common flags (``--flag value`` or ``--flag=value``, each at most once, anywhere),
    the command, its switches, and for ``run`` one task id. Anything else (help, ``--event``,
    an abbreviation, a repeated or unknown flag, a value that looks like a flag) is None, and
    the full parser decides, with its messages.
    """
    common: dict[str, str] = {}
    command: str | None = None
    positionals: list[str] = []
    switches: set[str] = set()
    tokens = iter(argv)
    for token in tokens:
        name, has_value, value = token.partition("=")
        if name in _CHOICES:
            if not has_value:
                value = next(tokens, "-")
            allowed = _CHOICES[name]
            if name in common or value.startswith("-") or (allowed and value not in allowed):
                return None
            common[name] = value
        elif token.startswith("-"):
            if command is None or token not in _SWITCHES[command]:
                return None
            switches.add(_SWITCHES[command][token])
        elif command is None:
            if token not in _SWITCHES:
                return None
            command = token
        else:
            positionals.append(token)
    if command is None or len(positionals) != (1 if command == "run" else 0):
        return None
    ns = SimpleNamespace(
        command=command,
        workspace_root=common.get("--workspace-root"),
        backend_url=common.get("--backend-url"),
        mode=common.get("--mode"),
        log_level=common.get("--log-level"),
        log_format=common.get("--log-format"),
        json="json" in switches,
    )
    if command == "run":
        ns.task_id, ns.event, ns.no_wait = positionals[0], None, "no_wait" in switches
    else:
        ns.dry_run = "dry_run" in switches
    return ns


def globals_of(ns: Parsed) -> Globals:
    """The common flags of a parsed command line, with their defaults applied."""
    from workspace_adapter.base import paths
    from workspace_adapter.base.globals import Globals

    return Globals(
        workspace_root=paths.resolve_root(ns.workspace_root),
        backend_url=ns.backend_url or paths.default_backend_url(),
        mode=ns.mode or paths.default_mode(),
        log_level=ns.log_level or ("info" if is_daemon(ns) else "warning"),
    )


def is_daemon(ns: Parsed) -> bool:
    """``backend``, ``serve``, ``worker`` and ``watch`` without ``--once``: they log at info
    by default."""
    return ns.command in ("backend", "serve", "worker") or (
        ns.command == "watch" and not getattr(ns, "once", False)
    )


def _dispatch(ns: Parsed, g: Globals) -> int:
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
    if command == "tasks":
        from workspace_adapter.commands import tasks

        return tasks.tasks(g, as_json=ns.json)
    if command == "show":
        from workspace_adapter.commands import show

        return show.show(g, ns.run_id, follow=ns.follow, as_json=ns.json)
    if command == "runs":
        from workspace_adapter.commands import runs

        return runs.runs(g, ns.task_id, limit=ns.limit, as_json=ns.json)
    if command == "flow":
        from workspace_adapter.commands import flow

        if ns.flow_command == "run":
            return flow.flow_run(
                g,
                ns.name,
                event_file=ns.event,
                as_json=ns.json,
                fork=ns.fork,
                tag=ns.tag,
                verbose=ns.verbose,
                continue_past_conflicts=ns.continue_past_conflicts,
            )
        return flow.flow_list(g, as_json=ns.json)
    if command == "init":
        from pathlib import Path

        from workspace_adapter.commands import init

        return init.init(
            g,
            # Not the folder of a workspace.toml further up: init writes a new one here.
            root=Path(ns.workspace_root).expanduser() if ns.workspace_root else Path.cwd(),
            fork=ns.fork,
            upstream=ns.upstream,
            force=ns.force,
            harness=ns.harness,
            as_json=ns.json,
        )
    if command == "harness":
        from workspace_adapter.commands import harness

        if ns.harness_command == "init":
            return harness.init(g, force=ns.force, as_json=ns.json, patches=ns.patches)
        return harness.release(
            g, bump=ns.bump, conflict=ns.conflict, as_json=ns.json, patches=ns.patches
        )
    if command == "backend":
        from workspace_adapter.commands import backend

        return backend.backend(
            **_backend_flags(ns), log_level=g.log_level, workspace_root=g.workspace_root
        )
    if command == "serve":
        from workspace_adapter.commands import serve

        return serve.serve(g, **_backend_flags(ns), tick_interval=ns.tick_interval)
    if command == "worker":
        from workspace_adapter.commands import worker

        return worker.worker(
            g, broker=ns.broker, concurrency=ns.concurrency, queues=ns.queues, name=ns.name
        )
    if command == "watch":
        from workspace_adapter.commands import watch

        return watch.watch(g, ns.once, as_json=ns.json)
    if command == "attempts":
        return _attempts(ns, g)
    if command == "prune":
        from workspace_adapter.commands import prune

        return prune.prune(
            g,
            older_than=ns.older_than,
            dry_run=ns.dry_run,
            as_json=ns.json,
            vacuum=ns.vacuum,
            data_dir=ns.data_dir,
            busy_timeout=ns.busy_timeout,
        )
    if command in ("dispatch", "replay", "events", "flow-runs", "cancel"):
        from workspace_adapter.commands import remote

        if command == "dispatch":
            return remote.dispatch(g, ns.file, wait=ns.wait, as_json=ns.json)
        if command == "replay":
            return remote.replay(g, ns.event_id, wait=ns.wait, as_json=ns.json)
        if command == "events":
            return remote.list_events(g, event_type=ns.event_type, limit=ns.limit, as_json=ns.json)
        if command == "flow-runs":
            return remote.list_runs(
                g, event_id=ns.event_id, status=ns.status, limit=ns.limit, as_json=ns.json
            )
        return remote.cancel(g, ns.run_id, as_json=ns.json)
    raise AssertionError(f"unwired command {command}")


def _backend_flags(ns: Parsed) -> dict[str, Any]:
    return {
        "host": ns.host,
        "port": ns.port,
        "cwd": ns.cwd,
        "data_dir": ns.data_dir,
        "token_file": ns.token_file,
        "secret_file": ns.secret_file,
        "allow_origin": ns.allow_origin,
        "public_host": ns.public_host,
        "concurrency": ns.concurrency,
        "env_allow": ns.env_allow,
        "app_server_url": ns.app_server_url,
        "local_app_server": ns.local_app_server,
        "executor": ns.executor,
        "broker": ns.broker,
    }


def _attempts(ns: Parsed, g: Globals) -> int:
    from workspace_adapter.base.errors import EXIT_BAD_INPUT, UserError
    from workspace_adapter.commands import attempts

    # argparse fills ``action`` first, so an ID alone is already refused as an unknown action.
    if ns.action is None:
        return attempts.list_attempts(g, ns.status, ns.json)
    if ns.attempt_id is None:
        raise UserError(f"attempts {ns.action}: give the attempt ID", EXIT_BAD_INPUT)
    if ns.status is not None:
        raise UserError(f"attempts {ns.action}: --status only applies to the list", EXIT_BAD_INPUT)
    if ns.action == "retry":
        return attempts.retry(g, ns.attempt_id, ns.json)
    return attempts.replay(g, ns.attempt_id, ns.json)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names (default: this process's arguments); its exit code.

    As the program itself (no ``argv``), a plain ``run`` or ``tick`` of command tasks ends the
    process here once its output is flushed: interpreter teardown (freeing every object of every
    module) would add about a tenth of those commands' whole time, and they leave nothing
    behind that needs it (their state is closed, they start no thread that outlives them).
    """
    from workspace_adapter.base.errors import error_handler

    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        build_parser().print_help()  # a bare `workspace`: the command list, not an error
        return 0
    quick = quick_parse(args)
    ns = quick or build_parser(command_named(args)).parse_args(args)
    if argv is None and ns.command in SYSTEM_ALLOCATOR_COMMANDS:
        _use_the_system_allocator(args)
    g = globals_of(ns)
    if quick is None:  # plain run and tick never log (nor pay for the module)
        from workspace_adapter.base import logs  # stdlib only until a logger is made

        logs.setup(g.log_level, ns.log_format, daemon=is_daemon(ns))
    try:
        with error_handler(g.workspace_root):
            code = _dispatch(ns, g)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    if argv is None and quick is not None:
        _end_quickly(code)
    return code


# The daemons run on the C library's allocator instead of Python's own (pymalloc): after 2,000
# clients came and left, pymalloc kept about 20 MB of arenas pinned by a few survivors each,
# which malloc_trim cannot hand back; malloc's free pages it can. No measurable dispatch cost.
SYSTEM_ALLOCATOR_COMMANDS = ("backend", "serve")
ALLOCATOR_ENV = "PYTHONMALLOC"


def _use_the_system_allocator(args: list[str]) -> None:
    """Start this process again with ``PYTHONMALLOC=malloc``, unless it already says one.

    The allocator is chosen when the interpreter starts: the daemon re-executes itself once,
    early (same pid, so a supervisor sees no difference). An operator's own ``PYTHONMALLOC``
    wins, and so does a failure to re-execute (the daemon then runs as it is).
    """
    import os

    if os.environ.get(ALLOCATOR_ENV):
        return
    os.environ[ALLOCATOR_ENV] = "malloc"
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "workspace_adapter", *args])
    except OSError:
        del os.environ[ALLOCATOR_ENV]


def _end_quickly(code: int) -> None:
    """``os._exit(code)`` after flushing, unless something that may need teardown was loaded."""
    import os

    # A flow task's run loads asyncio and the client, and logging registers exit handlers.
    if "asyncio" in sys.modules or "logging" in sys.modules:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        return  # let the interpreter report it the usual way
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
