"""Running one task, shared by ``workspace run`` and ``workspace tick``.

A command task is a subprocess in its own process group, its output streamed live and its
tails kept; a flow task is a generated FlowEvent handed to a :class:`FlowDispatcher`: the CLI's
sends it to the backend over the WebSocket (:class:`WebSocketDispatcher`), ``serve``'s hands it
to the backend in its own process. Only the standard library is imported at module level: the
flow branch imports msgspec, anyio and the client when it runs, so ``workspace run`` of a
command task stays quick to start (docs/decisions/0001-stdlib-only-cli-fast-path.md).
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TextIO

from workspace_adapter.base import display
from workspace_adapter.base import status as status_rule
from workspace_adapter.base.errors import (
    EXIT_BACKEND_UNREACHABLE,
    EXIT_BAD_INPUT,
    BackendRefused,
    UserError,
)
from workspace_adapter.base.flags import env_flag
from workspace_adapter.base.lifeline import Lifeline
from workspace_adapter.base.processes import (
    ProcessGroup,
    exit_reason,
    path_with_interpreter,
    spawn,
    start_failure,
    stop_group,
    wait_exit_sync,
)
from workspace_adapter.base.status import Status
from workspace_adapter.base.tails import OutputTail
from workspace_adapter.base.times import utc_now_iso
from workspace_adapter.base.values import Value
from workspace_adapter.local.config import TaskConfig, WorkspaceConfig
from workspace_adapter.local.state import StateStore
from workspace_adapter.local.taskruns import TaskRun

if TYPE_CHECKING:
    from workspace_adapter.protocol import WireRun

KILL_GRACE_SECONDS = 5.0
"""Between SIGTERM and SIGKILL for a timed-out task's process group (as for backend steps)."""

PIPE_DRAIN_SECONDS = 2.0
"""How long to keep reading a finished task's pipes after its group was killed."""


class Sinks(Value):
    """Where a task's live output goes: the terminal, or stderr only under ``--json``."""

    __slots__ = ("stderr", "stdout")

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr

    def __iter__(self) -> Iterator[TextIO]:
        return iter((self.stdout, self.stderr))

    @classmethod
    def for_json(cls, as_json: bool) -> Sinks:
        return cls(sys.stderr if as_json else sys.stdout, sys.stderr)


class Execution(Value):
    """A finished run and its exit code (docs/statuses.md); ``message`` goes to stderr."""

    __slots__ = ("exit_code", "message", "record")

    def __init__(self, record: TaskRun, exit_code: int, message: str | None = None) -> None:
        self.record = record
        self.exit_code = exit_code
        self.message = message


_sink_lock = threading.Lock()


def _write(sink: TextIO, text: str) -> None:
    with _sink_lock:
        sink.write(text)
        sink.flush()


def _pump(pipe: IO[bytes], sink: TextIO, tail: OutputTail) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    reader: Any = pipe
    while chunk := reader.read1(65536):
        tail.add(chunk)
        text = decoder.decode(chunk)
        if text:
            _write(sink, text)
    pipe.close()


def _join_all(threads: list[threading.Thread], seconds: float) -> None:
    """Join ``threads`` for at most ``seconds`` in all."""
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM/SIGHUP raise SystemExit while a task runs, so its group is killed and recorded.

    Python's default for SIGTERM ends the process at once: the task, in its own session, would
    run on as an orphan and its record would stay ``running``. Only the main thread can take
    signals; elsewhere (``serve`` ticks in a worker thread) the handlers stay as they are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, terminate)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def command_env(config: WorkspaceConfig, task: TaskConfig, mode: str) -> dict[str, str]:
    """Parent env + the task's env + the workspace variables, this interpreter's bin first."""
    env = dict(os.environ)
    env.update(task.env)
    env["CODEX_WORKSPACE_MODE"] = mode
    env["CODEX_WORKSPACE_ROOT"] = str(config.root)
    env["PATH"] = path_with_interpreter(env.get("PATH"))
    return env


def run_command(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    sinks: Sinks,
    timeout_text: str = "",
    kill_grace: float = KILL_GRACE_SECONDS,
    statuses: Mapping[int, str] | None = None,
) -> tuple[Status, str | None, int | None, str, str]:
    """Run ``argv``; (status, reason, exit code, stdout tail, stderr tail).

    A non-zero exit is ``failed`` unless ``statuses`` maps its code to another outcome (the
    task's ``statuses``); a timeout, a signal or a program that could not start never is.
    """
    lifeline = Lifeline()
    try:
        proc, group = spawn(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(lifeline.child_fd,),
        )
    except OSError as exc:
        lifeline.cut()
        return Status.FAILED, start_failure(argv[0], exc), None, "", ""
    # From here until cut(), a SIGKILL of this process kills the task's group too.
    lifeline.tie(group.pid)
    try:
        status, reason, code, out, err = _follow_command(
            proc, group, timeout, sinks, timeout_text, kill_grace
        )
    finally:
        lifeline.cut()
    if code is not None and code > 0 and reason == exit_reason(code) and statuses:
        status = Status(statuses.get(code, status))
    return status, reason, code, out, err


def _follow_command(
    proc: subprocess.Popen[bytes],
    group: ProcessGroup,
    timeout: float,
    sinks: Sinks,
    timeout_text: str,
    kill_grace: float,
) -> tuple[Status, str | None, int | None, str, str]:
    """Stream a started command's output until it ends (or times out); as :func:`run_command`."""
    tails = (OutputTail(), OutputTail())
    pumps: list[threading.Thread] = []
    reason: str | None = None
    try:  # from here on, any way out (a signal too) ends the task's group
        for pipe, sink, tail in zip((proc.stdout, proc.stderr), sinks, tails, strict=True):
            assert pipe is not None
            pump = threading.Thread(target=_pump, args=(pipe, sink, tail), daemon=True)
            pumps.append(pump)
            pump.start()
        wait_exit_sync(proc, timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc, group, kill_grace)
        reason = f"timed out after {timeout_text or f'{timeout:g}s'}; process group killed"
    except BaseException:
        stop_group(proc, group, kill_grace)
        raise
    _join_all(pumps, 0.5)
    if any(pump.is_alive() for pump in pumps):
        # A background child still holds the pipes; the task is over, so end its group.
        stop_group(proc, group, 0)
        _join_all(pumps, PIPE_DRAIN_SECONDS)
        if any(pump.is_alive() for pump in pumps):
            # A process that left the group (setsid, a daemon) still holds the pipes; waiting
            # for it could take forever. The pumps are daemon threads: leave them behind.
            _write(sinks.stderr, "warning: a detached process still holds the task's output\n")
    code = proc.returncode
    if reason is None and code != 0:
        reason = exit_reason(code)
    status = Status.COMPLETED if reason is None else Status.FAILED
    return status, reason, code, tails[0].text(), tails[1].text()


def build_event(
    config: WorkspaceConfig,
    task: TaskConfig,
    record: TaskRun,
    override: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The FlowEvent of a flow task's run; ``override`` is an ``--event`` file.

    ``override`` replaces the type and the payload; ``taskId`` is still added when absent and
    ``options`` from the caller's env still applies, so ``CODEX_FLOW_PUSH=0`` always holds.
    """
    environ = os.environ if environ is None else environ
    template = task.event
    event_type = (template.type if template else None) or task.flow or ""
    payload: dict[str, Any] = {"taskId": task.id, **(template.payload if template else {})}
    if override is not None:
        event_type = str(override.get("type") or event_type)
        payload = dict(override.get("payload") or {})
        payload.setdefault("taskId", task.id)
    options = {
        key: env_flag(environ[name])
        for key, name in (("fetch", "CODEX_FLOW_FETCH"), ("push", "CODEX_FLOW_PUSH"))
        if name in environ
    }
    if options:
        existing = payload.get("options")
        payload["options"] = {**(existing if isinstance(existing, dict) else {}), **options}
    return {
        "id": f"workspace:{config.name}:{task.id}:{record.id}",
        "type": event_type,
        "source": (template.source if template else None) or config.name,
        "occurredAt": record.started_at,
        "receivedAt": record.started_at,
        "payload": payload,
    }


def read_event_file(path: str) -> dict[str, Any]:
    """An ``--event`` file: a JSON object whose ``type`` and ``payload`` are used."""
    import msgspec  # only for flow tasks, which load it anyway

    try:
        data = msgspec.json.decode(Path(path).read_bytes())
    except OSError as exc:
        raise UserError(f"--event {path}: cannot read: {exc.strerror or exc}") from None
    except msgspec.DecodeError as exc:
        raise UserError(f"--event {path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"--event {path}: must be a JSON object with type and payload")
    if "type" in data and (not isinstance(data["type"], str) or not data["type"]):
        raise UserError(f"--event {path}: type must be a non-empty string")
    if not isinstance(data.get("payload", {}), dict):
        raise UserError(f"--event {path}: payload must be a JSON object")
    return data


OutputSink = Callable[[str, str, str], None]
"""Called with (run id, stream, line) for each line a followed run writes."""


class FlowOutcome(Value):
    """What a dispatch ended with: how many runs matched, their ids, when followed the final
    runs as the backend sent them, and whether the backend had the event already.

    A ``duplicate`` (the reply's status; ``protocol.DispatchStatus``) names the event's existing
    runs in ``run_ids``; its ``matched`` may be 0 (codex-flows), so ``run_ids``, not
    ``matched``, say whether any flow took the event.
    """

    __slots__ = ("duplicate", "matched", "run_ids", "runs")

    def __init__(
        self, matched: int, run_ids: list[str], runs: list[WireRun], duplicate: bool = False
    ) -> None:
        self.matched = matched
        self.run_ids = run_ids
        self.runs = runs
        self.duplicate = duplicate


class FlowDispatcher(Protocol):
    """Hands a flow task's event to the backend and, with ``wait``, follows its runs to the end.

    Raises :class:`UserError` when the backend cannot take it (exit code 4: not reachable) and
    :class:`TimeoutError` when following takes longer than ``timeout`` seconds.
    """

    def __call__(
        self, event: dict[str, Any], *, wait: bool, timeout: float, on_output: OutputSink
    ) -> FlowOutcome: ...


AcknowledgedSink = Callable[[str, list[str]], None]
"""Called with (event id, run ids) once the backend has acknowledged a dispatch."""


class WebSocketDispatcher:
    """The CLI's dispatcher: the backend at ``url``, over the WebSocket (the client).

    ``on_acknowledged`` hears the event id and run ids as soon as the backend took the event,
    before the runs are followed.
    """

    def __init__(self, url: str, on_acknowledged: AcknowledgedSink | None = None) -> None:
        self.url = url
        self.on_acknowledged = on_acknowledged

    def __call__(
        self, event: dict[str, Any], *, wait: bool, timeout: float, on_output: OutputSink
    ) -> FlowOutcome:
        import anyio

        from workspace_adapter import following

        def acknowledged(outcome: following.DispatchOutcome) -> None:
            if self.on_acknowledged is not None:
                self.on_acknowledged(outcome.event_id, outcome.run_ids)

        async def follow() -> following.DispatchOutcome:
            with anyio.fail_after(timeout):
                return await following.dispatch_and_follow(
                    self.url, event, wait=wait, on_output=on_output, on_acknowledged=acknowledged
                )

        outcome = anyio.run(follow)
        return FlowOutcome(outcome.matched, outcome.run_ids, outcome.runs, outcome.duplicate)


def _run_flow(
    config: WorkspaceConfig,
    task: TaskConfig,
    record: TaskRun,
    *,
    dispatcher: FlowDispatcher,
    sinks: Sinks,
    override: Mapping[str, Any] | None,
    wait: bool,
) -> tuple[int | None, str | None]:
    """Dispatch the task's event and fill ``record``.

    Returns an exit code override or None, and the line to print when the backend refused us
    (401/403) or dropped us for good while we followed its runs, or None.
    """
    # A flow task's branch: msgspec, which the command tasks never load.
    from workspace_adapter.events import EventError, check_sendable, is_result_line

    event = build_event(config, task, record, override)
    record.event_id = event["id"]
    try:
        check_sendable(event)
    except EventError as exc:  # too big, a NUL byte: the operator's to fix, and never sent
        record.status, record.reason = Status.FAILED, str(exc)
        return EXIT_BAD_INPUT, None
    tails = {"stdout": OutputTail(), "stderr": OutputTail()}

    def on_output(run_id: str, stream: str, line: str) -> None:
        if stream == "stdout" and is_result_line(line):
            return  # the summary below says it in words; the record keeps the run ids
        text = line if line.endswith("\n") else line + "\n"
        tails["stderr" if stream == "stderr" else "stdout"].add(text.encode())
        _write(sinks.stderr if stream == "stderr" else sinks.stdout, display.line(line) + "\n")

    override_code: int | None = None
    refusal: str | None = None
    try:
        outcome = dispatcher(event, wait=wait, timeout=task.timeout_seconds, on_output=on_output)
    except UserError as exc:  # BackendUnreachable, BackendRefused, an RPC error, a lost link
        from workspace_adapter.following import FollowLost  # loaded: it is what raised

        record.status, record.reason = Status.FAILED, exc.message
        if isinstance(exc, BackendRefused):
            record.reason = exc.reason  # running, but it wants a token: never "not reachable"
            refusal = exc.message
        elif isinstance(exc, FollowLost):
            # The runs were acknowledged and may go on: the record keeps their ids.
            record.reason = "lost the backend while following the runs"
            refusal = exc.message
        elif exc.exit_code == EXIT_BACKEND_UNREACHABLE:
            record.reason = "backend not reachable"
        override_code = exc.exit_code if exc.exit_code != 2 else 1
    except TimeoutError:
        record.status = Status.FAILED
        record.reason = f"timed out after {task.timeout} following the flow runs"
    else:
        record.run_ids = outcome.run_ids
        if not outcome.run_ids:
            record.status = Status.SKIPPED
            record.reason = f"no flow matched event type {event['type']!r}"
        elif not wait:
            record.status = Status.COMPLETED
            record.reason = "already dispatched" if outcome.duplicate else "dispatched"
        else:
            _print_run_summaries(outcome.runs, sinks.stdout)
            statuses = [run.flow_status for run in outcome.runs]
            record.status = status_rule.worst(statuses)
            record.reason = _runs_reason(outcome.runs, record.status)
    record.stdout_tail, record.stderr_tail = tails["stdout"].text(), tails["stderr"].text()
    return override_code, refusal


def _keep_dispatch(store: StateStore, record: TaskRun, event_id: str, run_ids: list[str]) -> None:
    """Store an acknowledged dispatch's ids in the running record at once (see
    :meth:`StateStore.record_dispatch`)."""
    record.event_id, record.run_ids = event_id, list(run_ids)
    store.record_dispatch(record)


def _print_run_summaries(runs: list[WireRun], sink: TextIO) -> None:
    """One block per backend run: flow/step, flow status, message, and the result's artifacts."""
    from workspace_adapter.flows.summary import artifact_lines, paint

    for run in runs:
        lines = [f"{run.flowName}/{run.stepName}: {paint(run.flow_status, sink)} [{run.id}]"]
        found = run.flow_result
        said = found.get("message") if found is not None else None
        if said:
            lines.append(f"  {display.cell(said)}")
        if run.error:
            lines.append(f"  reason: {display.cell(run.error)}")
        lines += [f"  {display.cell(line)}" for line in artifact_lines(run.artifacts)]
        _write(sink, "\n".join(lines) + "\n")


def _runs_reason(runs: list[WireRun], status: str) -> str | None:
    """The message of the first run that ended with the task's status, if it gave one."""
    return next((run.message for run in runs if run.flow_status == status), None)


def execute(
    store: StateStore,
    config: WorkspaceConfig,
    task: TaskConfig,
    record: TaskRun,
    *,
    mode: str,
    backend_url: str,
    sinks: Sinks,
    override: Mapping[str, Any] | None = None,
    wait: bool | None = None,
    dispatcher: FlowDispatcher | None = None,
) -> Execution:
    """Run ``task`` for ``record`` (already stored as ``running``) and store how it ended.

    Flow tasks go to ``dispatcher``; by default the backend at ``backend_url``, over the wire.
    """
    override_code: int | None = None
    refusal: str | None = None
    with _terminate_as_exit():
        try:
            if task.kind == "command":
                assert task.command is not None
                (
                    record.status,
                    record.reason,
                    record.exit_code,
                    record.stdout_tail,
                    record.stderr_tail,
                ) = run_command(
                    task.command,
                    cwd=config.root,
                    env=command_env(config, task, mode),
                    timeout=task.timeout_seconds,
                    timeout_text=task.timeout,
                    sinks=sinks,
                    statuses=task.statuses,
                )
            else:
                if dispatcher is None:
                    dispatcher = WebSocketDispatcher(
                        backend_url, functools.partial(_keep_dispatch, store, record)
                    )
                override_code, refusal = _run_flow(
                    config,
                    task,
                    record,
                    dispatcher=dispatcher,
                    sinks=sinks,
                    override=override,
                    wait=task.wait if wait is None else wait,
                )
        except BaseException:
            record.status, record.reason = Status.FAILED, "interrupted"
            record.finished_at = utc_now_iso()
            store.finish(record)
            raise
    record.finished_at = utc_now_iso()
    store.finish(record)
    code = override_code if override_code is not None else status_rule.exit_code(record.status)
    message = None
    if refusal is not None:
        message = f"{task.id}: {refusal}"
    elif override_code == EXIT_BACKEND_UNREACHABLE:
        message = f"backend not reachable at {backend_url}; start it with `workspace backend`"
    elif record.status == Status.SKIPPED:
        message = f"warning: {task.id}: skipped: {record.reason}"
    elif code != 0:
        message = f"{task.id}: {record.status}: {record.reason}"
    return Execution(record, code, message)
