"""``workspace show RUN_ID [--follow]``: one backend run, or its output live until it ends.

Without ``--follow`` it asks ``flow.getRun`` once and prints the run: flow/step, status, times,
what the step said, its artifacts and the last lines of its output; exit 0. With ``--follow``
it streams the run's lines as ``workspace run`` does (``flow.subscribe``, else polling) until
the run ends, then prints the same summary; lines printed before it attached are not sent
again (the backend keeps a run's output tails once it ended, which plain ``show`` prints).
When the backend drops the connection (a slow reader is closed with 1008), it connects again
and follows on; the lines printed meanwhile are not shown, and a warning says so.
The exit code is then the run's status's (1 failed or canceled, 3 needs a person).
``--json`` prints one document on stdout, ``{"run": <run>}`` with the run as ``flow.getRun``
sends it; followed output then goes to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from workspace_adapter.base import display
from workspace_adapter.base import status as status_rule
from workspace_adapter.commands.remote import run_remote
from workspace_adapter.events import is_result_line

if TYPE_CHECKING:
    from workspace_adapter.base.globals import Globals
    from workspace_adapter.protocol import WireRun

TAIL_LINES = 20
"""At most this many lines of each stream in the summary."""


def show(g: Globals, run_id: str, *, follow: bool = False, as_json: bool = False) -> int:
    from workspace_adapter import client, following
    from workspace_adapter import protocol as rpc

    def on_output(got_id: str, stream: str, line: str) -> None:
        if stream == "stdout" and is_result_line(line) and not as_json:
            return  # the summary says it in words
        out = sys.stderr if as_json or stream == "stderr" else sys.stdout
        print(display.line(line.rstrip("\n")), file=out, flush=True)

    async def fetch() -> WireRun:
        session = await client.open_client(g.backend_url)
        try:
            got = await session.request(
                "flow.getRun", rpc.RunIdParams(runId=run_id), result=rpc.RunResult
            )
            if not follow or got.run.terminal:
                return got.run
            if not as_json:
                print(
                    f"following {run_id} ({got.run.flowName}/{got.run.stepName}, {got.run.status})",
                    file=sys.stderr,
                )
            await client.subscribe(session, got.run.eventId)
            # Through drops too (a slow reader of our output is closed with 1008): the run's
            # final state is what the exit code says.
            [done] = await following.follow_until_done(
                session, got.run.eventId, [run_id], on_output
            )
            return done
        finally:
            await session.close()

    run = run_remote(fetch)
    if as_json:
        import msgspec

        document: dict[str, Any] = {"run": msgspec.to_builtins(run)}
        sys.stdout.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n")
    else:
        print("\n".join(summary(run, sys.stdout, with_output=not follow)))
    if follow:
        return status_rule.exit_code(run.flow_status)
    return 0


def summary(run: WireRun, sink: Any, *, with_output: bool = True) -> list[str]:
    """The lines ``show`` prints for ``run``."""
    from workspace_adapter.flows.summary import artifact_lines, paint

    status = run.flow_status if run.terminal else run.status
    c = display.cell
    lines = [f"{c(run.id)}  {c(run.flowName)}/{c(run.stepName)}  {paint(status, sink)}"]
    lines.append(f"  event    {c(run.eventId)}{'  (replay)' if run.replay else ''}")
    times = [f"created {c(run.createdAt)}"]
    if run.startedAt:
        times.append(f"started {c(run.startedAt)}")
    if run.completedAt:
        times.append(f"ended {c(run.completedAt)}")
    lines.append("  " + ", ".join(times))
    if run.exitCode is not None:
        lines.append(f"  exit     {run.exitCode}")
    said = run.flow_result.get("message") if run.flow_result is not None else None
    if said:
        lines.append(f"  said     {c(said)}")
    if run.error:
        lines.append(f"  reason   {c(run.error)}")
    lines += [f"  {c(line)}" for line in artifact_lines(run.artifacts)]
    if with_output:
        for name, text in (("stdout", run.stdoutTail or run.stdout), ("stderr", run.stderrTail)):
            kept = [x for x in text.splitlines() if not is_result_line(x)]
            if kept:
                lines.append(f"  {name} (last {min(len(kept), TAIL_LINES)} lines):")
                lines += [f"    {display.line(x)}" for x in kept[-TAIL_LINES:]]
    return lines
