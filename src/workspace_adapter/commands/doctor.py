"""``workspace doctor``: check config, flows, tools, git remotes, state and backend; never writes.

Only reads: git runs with ``--no-optional-locks``, SQLite is opened read-only and only when the
file exists, nothing is created (not even ``.workspace/``). Each problem is its own line.

Exit 0 when every check passes (warnings allowed), 1 when one fails, 2 when the config cannot
be read. ``--json`` prints::

    {"ok": false, "exitCode": 1,
     "checks": [{"check": "tools", "status": "fail", "message": "npm not found on PATH"}, ...]}

``status`` is ``ok``, ``warn`` (worth knowing, not a failure) or ``fail``; ``check`` is one of
config, task, flows, tools, fork, gitignore, state, last-run, backend, app-server, broker,
workers. An unreachable
backend fails when a flow task needs it and is a warning otherwise; ``app-server`` appears only
for a backend started with ``--app-server-url`` and warns while that app-server is unreachable.
``broker`` and ``workers`` appear with the Celery executor (``[workspace.executor] kind =
"celery"``, or ``CODEX_WORKSPACE_BROKER_URL`` set): the broker answers a ping, and which
``workspace worker`` processes answer Celery's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from workspace_adapter.base import paths
from workspace_adapter.base import status as status_rule
from workspace_adapter.base.display import cell
from workspace_adapter.base.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, UserError
from workspace_adapter.base.gitenv import no_git_env
from workspace_adapter.base.processes import path_with_interpreter, process_alive
from workspace_adapter.base.status import Status
from workspace_adapter.local import config as config_mod
from workspace_adapter.local import configfile
from workspace_adapter.local.state import DB_NAME, StateStore

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals

TOOLS = ("git", "bash", "node", "npm")
HARNESS_FLOW = "patch-moi-harness"
DEFAULT_FORK = "harness/fork"
DEFAULT_REMOTES = ("origin", "upstream", "jojo")

CheckStatus = Literal["ok", "warn", "fail"]


class Check(msgspec.Struct, kw_only=True):
    """One line of the report."""

    check: str
    status: CheckStatus
    message: str


class _Report:
    def __init__(self) -> None:
        self.checks: list[Check] = []

    def add(self, check: str, status: CheckStatus, message: str) -> None:
        self.checks.append(Check(check=check, status=status, message=message))


def doctor(g: Globals, *, as_json: bool = False) -> int:
    """Run every check and print the report; exit 0, 1 or 2 as documented above."""
    report = _Report()
    root = g.workspace_root
    config = _check_config(report, root)
    discovery = _check_flows(report, root)
    if config is not None:
        _check_tasks(report, config, discovery)
    _check_tools(report)
    _check_fork(report, root, config)
    _check_gitignore(report, root, g.mode)
    _check_state(report, root, g.mode, config)
    needs_backend = config is not None and any(t.kind == "flow" and t.enabled for t in config.tasks)
    _check_backend(report, g.backend_url, needs_backend)
    _check_broker(report, config)
    failed = any(c.status == "fail" for c in report.checks)
    code = EXIT_BAD_INPUT if config is None else EXIT_FAILED if failed else EXIT_OK
    if as_json:
        document = {"ok": code == EXIT_OK, "exitCode": code, "checks": report.checks}
        sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
    else:
        for c in report.checks:
            print(f"{c.status:<4}  {c.check}: {cell(c.message)}")
    return code


def _check_config(report: _Report, root: Path) -> config_mod.WorkspaceConfig | None:
    try:
        config = configfile.load(root)
    except config_mod.ConfigError as exc:
        for problem in exc.problems:
            report.add("config", "fail", problem)
        return None
    report.add(
        "config",
        "ok",
        f"{config.display_path}: valid ({len(config.tasks)} tasks, {len(config.sources)} sources)",
    )
    return config


def _check_flows(report: _Report, root: Path) -> Any:
    try:
        from workspace_adapter.flows.package import discover_flows
    except ImportError as exc:
        report.add("flows", "warn", f"flow discovery unavailable in this build: {exc}")
        return None
    discovery = discover_flows(root)
    names = ", ".join(p.name for p in discovery.packages) or "none"
    report.add("flows", "ok", f"{len(discovery.packages)} flow package(s): {names}")
    for warning in discovery.warnings:
        report.add("flows", "warn", warning)
    for error in discovery.errors:
        report.add("flows", "fail", str(error))
    return discovery


def _check_tasks(report: _Report, config: config_mod.WorkspaceConfig, discovery: Any) -> None:
    # A command task runs with this interpreter's bin/ first on PATH; check the same.
    search = path_with_interpreter(os.environ.get("PATH"))
    types = {s.trigger_type for p in discovery.packages for s in p.steps} if discovery else None
    for task in config.tasks:
        where = f"{config.display_path}:{task.line}: task {task.id}"
        if not task.enabled:
            report.add("task", "ok", f"{where}: disabled")
        elif task.kind == "command":
            assert task.command is not None
            program = task.command[0]
            if os.sep in program or shutil.which(program, path=search):
                report.add("task", "ok", f"{where}: command {program}")
            else:
                report.add("task", "fail", f"{where}: program {program!r} not found on PATH")
        else:
            event_type = (task.event.type if task.event else None) or task.flow
            if types is not None and event_type not in types:
                report.add(
                    "task",
                    "warn",
                    f"{where}: no flow step triggers on {event_type!r}; a run would be skipped",
                )
            else:
                report.add("task", "ok", f"{where}: flow event {event_type!r}")


def _check_tools(report: _Report) -> None:
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            report.add("tools", "ok", f"{tool}: {found}")
        else:
            report.add("tools", "fail", f"{tool} not found on PATH; install it or fix PATH")


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "--no-optional-locks", "-C", str(cwd), *args],
        capture_output=True,
        text=True,
        env=no_git_env(),
        check=False,
    )


def _harness_config(root: Path) -> dict[str, Any]:
    for folder in (".codex/flows", "flows"):
        manifest = root / folder / HARNESS_FLOW / "flow.toml"
        if manifest.is_file():
            try:
                data = tomllib.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                return {}  # the flows check already reports the broken file
            cfg = data.get("config")
            return cfg if isinstance(cfg, dict) else {}
    return {}


def _check_fork(report: _Report, root: Path, config: config_mod.WorkspaceConfig | None) -> None:
    """Each ``[[workspace.forks]]`` checkout; without any, the tutorial package's fork."""
    forks = config.forks if config is not None else []
    if forks:
        for entry in forks:
            remotes = [*entry.push_remotes, entry.canonical_remote]
            _check_one_fork(
                report,
                root,
                entry.path,
                required=[r for r in remotes if r],
                upstream=entry.upstream_remote,
                upstream_added=bool(entry.upstream_url),
                hint=f"fix workspace.forks {entry.name!r}.path",
            )
        return
    cfg = _harness_config(root)
    if not cfg:
        return  # no fork configured and no tutorial package: nothing to check
    push_remotes = cfg.get("push_remotes")
    _check_one_fork(
        report,
        root,
        str(cfg.get("fork_repo") or DEFAULT_FORK),
        required=[*DEFAULT_REMOTES, *(push_remotes if isinstance(push_remotes, list) else [])],
        upstream=str(cfg.get("upstream_remote") or "upstream"),
        upstream_added=False,
        hint="run `workspace harness init`",
    )


def _check_one_fork(
    report: _Report,
    root: Path,
    fork_rel: str,
    *,
    required: list[str],
    upstream: str,
    upstream_added: bool,
    hint: str,
) -> None:
    fork = (root / fork_rel).resolve()
    if not fork.exists():
        report.add("fork", "warn", f"{fork_rel} not found; {hint}")
        return
    if shutil.which("git") is None:
        return
    listed = _git(fork, "remote")
    if listed.returncode != 0:
        report.add("fork", "fail", f"{fork_rel} is not a git repository: {listed.stderr.strip()}")
        return
    remotes = set(listed.stdout.split())
    for name in dict.fromkeys([upstream, *required]):
        if name in remotes:
            report.add("fork", "ok", f"{fork_rel}: remote {name}")
        elif name == upstream and upstream_added:
            # The maintenance run adds it from upstream_url on its first fetch.
            report.add("fork", "ok", f"{fork_rel}: remote {name} is added from upstream_url")
        else:
            report.add(
                "fork",
                "fail",
                f"{fork_rel}: remote {name!r} missing; add it with "
                f"`git -C {fork_rel} remote add {name} <url>`",
            )


def _check_gitignore(report: _Report, root: Path, mode: str) -> None:
    if shutil.which("git") is None:
        return
    probe = paths.state_dir(root, mode) / DB_NAME
    result = _git(root, "check-ignore", "-q", str(probe.relative_to(root)))
    if result.returncode == 0:
        report.add("gitignore", "ok", ".workspace/ is git-ignored")
    elif result.returncode == 1:
        report.add("gitignore", "warn", ".workspace/ is not git-ignored; add it to .gitignore")
    else:
        report.add("gitignore", "warn", f"{root} is not in a git repository; nothing to ignore")


def _check_state(
    report: _Report, root: Path, mode: str, config: config_mod.WorkspaceConfig | None
) -> None:
    store = StateStore.for_workspace(root, mode, readonly=True)
    if not store.exists():
        report.add("state", "ok", f"no run state yet ({store.path})")
        return
    try:
        with store.connect(write=False) as db:
            count = db.execute("SELECT count(*) FROM runs").fetchone()[0]
            rows = db.execute(
                "SELECT task_id, status, reason, started_at, pid, pid_marker FROM runs r "
                "WHERE started_at = (SELECT max(started_at) FROM runs WHERE task_id = r.task_id)"
            ).fetchall()
    except UserError as exc:  # a store that is not ours, corrupt, or locked
        report.add("state", "fail", exc.message)
        return
    except Exception as exc:  # sqlite3.Error and friends: report, never crash the doctor
        report.add("state", "fail", f"{store.path} is not readable: {exc}")
        return
    report.add("state", "ok", f"{store.path}: readable, {count} run(s)")
    last = {row[0]: row for row in rows}
    task_ids = [t.id for t in config.tasks] if config else sorted(last)
    for task_id in task_ids:
        row = last.get(task_id)
        if row is None:
            report.add("last-run", "ok", f"{task_id}: never run")
            continue
        _, status, reason, started, pid, marker = row
        why = f" ({reason})" if reason else ""
        if status == Status.RUNNING and not process_alive(pid, marker):
            report.add(
                "last-run",
                "warn",
                f"{task_id}: left running by a process that is gone (started {started}); "
                "the next run or tick marks it failed, interrupted",
            )
        elif status_rule.exit_code(status) != 0:  # failed, canceled, or needs a person
            report.add("last-run", "warn", f"{task_id}: {status}{why} at {started}")
        else:
            report.add("last-run", "ok", f"{task_id}: {status}{why} at {started}")


def _check_backend(report: _Report, url: str, needed: bool) -> None:
    import anyio

    from workspace_adapter import client

    try:
        info = anyio.run(client.probe, url)
    except UserError as exc:
        why = "" if needed else " (only flow tasks need it)"
        report.add("backend", "fail" if needed else "warn", f"{exc.message}{why}")
        return
    name, version = info.get("name", "unknown"), info.get("version", "?")
    report.add("backend", "ok", f"{name} {version} at {url}")
    _check_app_server(report, url)


WORKERS_PING_SECONDS = 1.0


def _check_broker(report: _Report, config: config_mod.WorkspaceConfig | None) -> None:
    """With the Celery executor: the broker answers, and which workers answer."""
    from workspace_adapter.base.redact import redact_url
    from workspace_adapter.cluster.brokerurl import BROKER_ENV, broker_problem, chosen_broker

    executor = None if config is None else config.executor
    celery_chosen = executor is not None and executor.kind == "celery"
    url = chosen_broker(None, executor.broker if executor is not None else None)
    if not celery_chosen and not os.environ.get(BROKER_ENV):
        return
    if url is None:
        report.add("broker", "fail", f"the Celery executor has no broker; set {BROKER_ENV}")
        return
    problem = broker_problem(url)
    if problem is not None:
        report.add("broker", "fail", problem)
        return
    try:
        import redis
        from redis.exceptions import RedisError

        from workspace_adapter.cluster.app import celery_app
    except ImportError:
        report.add(
            "broker",
            "fail",
            "the celery extra is not installed: pip install 'workspace-adapter[celery]'",
        )
        return
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        report.add(
            "broker",
            "fail",
            f"{redact_url(url)} does not answer ({type(exc).__name__}); runs wait queued until it "
            "does: start Redis, or fix the URL",
        )
        return
    finally:
        client.close()
    report.add("broker", "ok", f"{redact_url(url)} answers")
    app = celery_app(url)
    try:
        replies = app.control.ping(timeout=WORKERS_PING_SECONDS) or []
    except Exception as exc:  # Celery wraps transport errors in many classes
        report.add("workers", "warn", f"cannot ask the workers: {type(exc).__name__}")
        return
    names = sorted(name for reply in replies for name in reply)
    if names:
        report.add("workers", "ok", f"{len(names)} answer: {', '.join(names)}")
    else:
        report.add(
            "workers",
            "warn",
            "no worker answers; runs wait until one starts (workspace worker --broker URL)",
        )


def _check_app_server(report: _Report, url: str) -> None:
    """The backend's app-server link, from its ``/readyz``: only when it has an app-server."""
    import json
    import urllib.request

    ready_url = "http" + url.removeprefix("ws").rstrip("/") + "/readyz"
    try:
        with urllib.request.urlopen(ready_url, timeout=3) as response:
            ready = json.loads(response.read())
    except (OSError, ValueError):
        return  # an older backend, or HTTP blocked: the backend check already spoke
    app_server = ready.get("appServer") if isinstance(ready, dict) else None
    if not isinstance(app_server, dict):
        return
    where = app_server.get("url", "?")
    if app_server.get("connected"):
        report.add("app-server", "ok", f"the backend is connected to {where}")
    else:
        why = app_server.get("error") or "not connected"
        report.add(
            "app-server",
            "warn",
            f"the backend cannot reach the app-server at {where}: {why}; appServer.* calls "
            "fail until it is back (flows are not affected)",
        )
