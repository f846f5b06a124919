"""``workspace flow run`` and ``workspace flow list``: flow packages in this process, no backend."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workspace_adapter.base import display
from workspace_adapter.base import status as status_rule
from workspace_adapter.base.errors import EXIT_BAD_INPUT, EXIT_OK, UserError
from workspace_adapter.base.status import Status
from workspace_adapter.events import EventError, is_result_line, normalize_event
from workspace_adapter.flows.builtin import FORK_FLOW
from workspace_adapter.flows.summary import artifact_lines, paint
from workspace_adapter.maintenance.progress import VERBOSE_ENV

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals
    from workspace_adapter.flows.package import FlowDiscovery, FlowPackage, FlowStep
    from workspace_adapter.flows.runner import StepOutcome

# Shorter than the runner's default: whoever stops us (a task timeout) may SIGKILL us soon
# after its SIGTERM, and the step lives in its own session, out of reach of that signal.
CLI_KILL_GRACE = 3.0


def flow_list(g: Globals, as_json: bool) -> int:
    """List every flow package with its steps and triggers, then every package that failed.

    Exits 2 when a package could not be loaded, so a CI check catches a broken flow.toml.
    """
    from workspace_adapter.flows.package import discover_flows

    discovery = discover_flows(g.workspace_root)
    if as_json:
        document = {
            "flows": [_package_json(p, g.workspace_root) for p in discovery.packages],
            "errors": [str(e) for e in discovery.errors],
            "warnings": discovery.warnings,
        }
        print(json.dumps(document, indent=2))
    else:
        if not discovery.packages and not discovery.errors:
            print(f"no flow packages under {g.workspace_root}/.codex/flows or flows/")
        for package in discovery.packages:
            print(f"{package.name} {package.version}  {_show(package.root, g.workspace_root)}")
            for step in package.steps:
                schema = f" ({step.schema_path.name})" if step.schema_path else ""
                trigger = f"on {step.trigger_type}" if step.trigger_type else "no trigger"
                print(f"  {step.name}  {step.runner}  {trigger}{schema}")
        for warning in discovery.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for error in discovery.errors:
            print(f"error: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT if discovery.errors else EXIT_OK


def flow_run(
    g: Globals,
    name: str,
    event_file: str | None,
    as_json: bool,
    fork: str | None = None,
    tag: str | None = None,
    verbose: bool = False,
    continue_past_conflicts: bool = False,
) -> int:
    """Run every step of flow ``name`` whose trigger matches the event, here and now.

    The event is ``event_file``, or a release ``tag`` of the configured ``fork`` (an
    ``upstream.release`` event naming the fork; the built-in fork-maintenance flow runs it even
    when a workspace package serves that fork's events), or else the flow's first
    ``fixtures/*.json``. Human output
    streams each step's lines as they happen, then a summary per step. With ``as_json``,
    stdout holds exactly one document: the FlowResult of the worst step (in status order), as
    the step printed it; a step that did not complete is reported as
    ``{"status": "failed"|"canceled", "message": <reason>}``, and no matching step as
    ``{"status": "skipped", "message": ...}``. The steps' lines then go to stderr.
    ``verbose`` sets ``CODEX_FLOW_VERBOSE=1`` for the steps (the runner passes it on): the
    fork maintenance step then prints every command and the tools' full output.
    ``continue_past_conflicts`` sets ``payload.options.continuePastConflicts`` on the event: a
    fork with a patch series then skips a patch that conflicts and tries the rest.
    """
    import anyio

    from workspace_adapter.flows.package import discover_flows, matching_steps

    if (fork is None) != (tag is None):
        raise UserError("--fork and --tag go together: pass both, e.g. --fork NAME --tag v1.2.3")
    if fork is not None and event_file is not None:
        raise UserError("pass either --event FILE or --fork NAME --tag TAG, not both")
    event = None if fork is None or tag is None else _release_event(g, fork, tag)
    discovery = discover_flows(g.workspace_root)
    package = discovery.get(name)
    if package is None:
        # A package that failed to load is most likely in a folder named after its flow.
        broken = [e for e in discovery.errors if Path(e.file).parent.name == name]
        if broken:
            raise broken[0]
        raise UserError(_unknown_flow(name, discovery))
    if event is None:
        path = Path(event_file) if event_file else _default_fixture(package, g.workspace_root)
        event = read_event(path)
    if continue_past_conflicts:
        event = _with_option(event, "continuePastConflicts")
    matches = matching_steps([package], event)
    if not matches and fork is not None and package.name == FORK_FLOW:
        # Asked for by name: run it even though a workspace package serves this fork's events.
        matches = [(package, s) for s in package.steps if s.trigger_type == event["type"]]
    if not matches:
        message = _no_match(package, event)
        print(f"warning: {message}", file=sys.stderr)
        if as_json:
            print(json.dumps({"status": Status.SKIPPED, "message": message}))
        else:
            print(paint(Status.SKIPPED, sys.stdout))
        return status_rule.exit_code(Status.SKIPPED)
    with _step_verbosity(verbose):
        outcomes = anyio.run(_run_steps, g, matches, event, as_json)
    statuses = [o.flow_status for _, o in outcomes]
    worst = status_rule.worst(statuses)
    if as_json:
        outcome = next(o for _, o in outcomes if o.flow_status == worst)
        print(json.dumps(_result_document(outcome)))
    elif len(outcomes) > 1:
        print(f"status: {paint(worst, sys.stdout)}")
    return status_rule.exit_code(worst)


@contextlib.contextmanager
def _step_verbosity(verbose: bool) -> Iterator[None]:
    """``CODEX_FLOW_VERBOSE=1`` in the environment the steps inherit, for the block only."""
    if not verbose:
        yield
        return
    before = os.environ.get(VERBOSE_ENV)
    os.environ[VERBOSE_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(VERBOSE_ENV, None)
        else:
            os.environ[VERBOSE_ENV] = before


def _with_option(event: dict[str, Any], option: str) -> dict[str, Any]:
    """``event`` with ``payload.options.<option>`` turned on (the other options kept)."""
    payload = event.get("payload")
    payload = dict(payload) if isinstance(payload, dict) else {}
    options = payload.get("options")
    payload["options"] = {**(options if isinstance(options, dict) else {}), option: True}
    return {**event, "payload": payload}


def _release_event(g: Globals, fork_name: str, tag: str) -> dict[str, Any]:
    """The ``upstream.release`` event of ``tag`` for the configured fork ``fork_name``."""
    from workspace_adapter.local.configfile import load

    config = load(g.workspace_root)
    fork = config.fork(fork_name)
    if not tag.strip():
        raise UserError("--tag must name a release tag, e.g. --tag v1.2.3")
    payload: dict[str, Any] = {"fork": fork.name, "tag": tag.strip()}
    if fork.repo:
        payload["repo"] = fork.repo
    raw = {
        "id": f"workspace:{config.name}:flow-run:{fork.name}:{tag.strip()}:{secrets.token_hex(4)}",
        "type": "upstream.release",
        "source": config.name,
        "payload": payload,
    }
    try:
        return normalize_event(raw)
    except EventError as exc:
        raise UserError(f"--fork {fork_name!r} --tag {tag!r}: {exc}") from None


def read_event(path: Path) -> dict[str, Any]:
    """Read and check one FlowEvent file; every problem names the file (and field)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: event file not found; pass an existing --event FILE") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the event file ({exc})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}; fix the file") from None
    try:
        return normalize_event(raw)
    except EventError as exc:
        raise UserError(f"{path}: {exc}; fix the event file") from None


async def _run_steps(
    g: Globals, matches: list[tuple[FlowPackage, FlowStep]], event: dict[str, Any], as_json: bool
) -> list[tuple[FlowStep, StepOutcome]]:
    import signal

    import anyio

    from workspace_adapter.backend.records import new_flow_run_id
    from workspace_adapter.flows.executor import LocalExecutor
    from workspace_adapter.flows.runner import StepInvocation, StepOutcome

    executor = LocalExecutor(kill_grace=CLI_KILL_GRACE)
    cancel = anyio.Event()
    outcomes: list[tuple[FlowStep, StepOutcome]] = []

    async def cancel_on_signal() -> None:
        # SIGINT is asyncio's (it cancels us, and the runner kills the step on the way out).
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                print(f"{signal.Signals(signum).name}: stopping the step", file=sys.stderr)
                cancel.set()

    def on_line(stream: str, text: str) -> None:
        if stream == "stdout" and is_result_line(text):
            return  # shown as the summary, or as the JSON document
        target = sys.stderr if as_json or stream == "stderr" else sys.stdout
        print(display.line(text), file=target, flush=True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_on_signal)
        for package, step in matches:
            now = time.monotonic()
            if cancel.is_set():
                outcome = StepOutcome.ended(Status.CANCELED, "canceled")
            else:
                invocation = StepInvocation(
                    package=package,
                    step=step,
                    event=event,
                    run_id=new_flow_run_id(),
                    workspace_root=g.workspace_root,
                    workspace_backend_url=g.backend_url,
                    launched_by="cli",
                )
                if not as_json:
                    print(f"── {package.name}/{step.name} ({invocation.run_id})", flush=True)
                outcome = await executor.run(invocation, on_line=on_line, cancel=cancel)
            outcomes.append((step, outcome))
            if not as_json:
                _print_summary(package, step, outcome, time.monotonic() - now)
        tg.cancel_scope.cancel()
    return outcomes


def _result_document(outcome: StepOutcome) -> dict[str, Any]:
    if outcome.status == Status.COMPLETED and outcome.result is not None:
        return outcome.result
    document: dict[str, Any] = {"status": outcome.status, "message": outcome.error}
    if outcome.result and outcome.result.get("artifacts"):
        document["artifacts"] = outcome.result["artifacts"]
    return document


def _print_summary(package: FlowPackage, step: FlowStep, outcome: StepOutcome, secs: float) -> None:
    out = sys.stdout
    status = outcome.flow_status
    print(f"{package.name}/{step.name}: {paint(status, out)} ({secs:.1f}s)", file=out)
    result = outcome.result or {}
    if result.get("message"):
        print(f"  {display.cell(result['message'])}", file=out)
    if outcome.error:
        print(f"  reason: {display.cell(outcome.error)}", file=out)
    artifacts = result.get("artifacts")
    artifacts = artifacts if isinstance(artifacts, dict) else {}
    for line in artifact_lines(artifacts):
        print(f"  {display.cell(line)}", file=out)
    out.flush()


def _show(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _package_json(package: FlowPackage, root: Path) -> dict[str, Any]:
    return {
        "name": package.name,
        "version": package.version,
        "description": package.description,
        "root": _show(package.root, root),
        "steps": [
            {
                "name": s.name,
                "runner": s.runner,
                "trigger": {
                    "type": s.trigger_type,
                    "schema": _show(s.schema_path, package.root) if s.schema_path else None,
                },
                "timeoutMs": s.timeout_ms,
                "concurrency": s.concurrency,
            }
            for s in package.steps
        ],
    }


def _unknown_flow(name: str, discovery: FlowDiscovery) -> str:
    known = ", ".join(sorted(p.name for p in discovery.packages)) or "none"
    message = f"unknown flow {name!r}; known flows: {known}"
    if name == FORK_FLOW:
        message += " (fork-maintenance serves [[workspace.forks]]; workspace.toml has none)"
    if discovery.errors:
        broken = "; ".join(str(e) for e in discovery.errors)
        message += f" ({len(discovery.errors)} package(s) failed to load: {broken})"
    return message


def _default_fixture(package: FlowPackage, root: Path) -> Path:
    fixtures = sorted((package.root / "fixtures").glob("*.json"))
    if not fixtures:
        where = _show(package.root / "fixtures", root)
        hint = " or --fork NAME --tag TAG" if package.name == FORK_FLOW else ""
        raise UserError(f"flow {package.name!r} has no {where}/*.json; pass --event FILE{hint}")
    return fixtures[0]


def _no_match(package: FlowPackage, event: dict[str, Any]) -> str:
    event_type = event.get("type")
    payload = event.get("payload") or {}
    if package.name == FORK_FLOW and any(s.trigger_type == event_type for s in package.steps):
        forks = package.config.get("forks") or []
        known = ", ".join(f["name"] for f in forks) or "none"
        return (
            f"event {event.get('id')!r} names no fork fork-maintenance serves "
            f"(payload.fork {payload.get('fork')!r}, payload.repo {payload.get('repo')!r}; "
            f"configured forks: {known}, those a workspace flow names are served there); "
            "status skipped"
        )
    same_type = [s for s in package.steps if s.trigger_type == event_type]
    if same_type:
        import jsonschema

        step = same_type[0]
        schema = step.schema_path.name if step.schema_path else "schema"
        error = jsonschema.exceptions.best_match(step.validator.iter_errors(event.get("payload")))
        where = "/".join(str(p) for p in error.absolute_path) if error else ""
        why = f"payload{'/' + where if where else ''}: {error.message}" if error else "payload"
        return (
            f"no step of {package.name} matches event {event.get('id')!r}: {why} "
            f"(trigger schema {schema}); status skipped"
        )
    types = ", ".join(sorted({s.trigger_type for s in package.steps if s.trigger_type})) or "none"
    return (
        f"no step of {package.name} listens to event type {event_type!r} "
        f"(its steps listen to: {types}); status skipped"
    )
