"""The one place that wires the command line: every command to its module.

Each command lives in ``workspace_adapter.commands.<name>`` as a function that takes parsed
values and returns an exit code. Modules are imported only when their command runs, so a
quick command does not pay for the daemon's imports. The plain forms of ``run`` and ``tick``
are read by :func:`quick_parse` without argparse (which, with the help formatter it builds for
every argument, costs about as much as either command's whole budget); anything else, help and
errors included, goes through the full parser of :mod:`workspace_adapter.cliparser`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from workspace_adapter.base.globals import Globals

    Parsed = argparse.Namespace | SimpleNamespace


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
    quick = quick_parse(args)
    ns: Parsed
    if quick is not None:
        ns = quick
    else:
        from workspace_adapter import cliparser

        if not args:
            cliparser.build_parser().print_help()  # a bare `workspace`: the commands, no error
            return 0
        ns = cliparser.build_parser(cliparser.command_named(args)).parse_args(args)
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
