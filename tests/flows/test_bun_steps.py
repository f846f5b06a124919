"""Bun steps as codex-flows writes them: raw scripts, module-style steps, code-mode refusals.

Needs bun on PATH (``.ci/run`` installs the npm package ``bun``); without it these tests are
reported as skipped, naming why, never as passed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workspace_adapter.base.status import Status
from workspace_adapter.flows.bun import MODULE_RUNNER, bun_argv, is_module_style
from workspace_adapter.flows.package import FlowPackage, load_flow
from workspace_adapter.flows.runner import StepInvocation, StepOutcome, run_step

MakeFlow = Callable[..., Path]
EVENT: dict[str, Any] = {"id": "evt-bun", "type": "go", "payload": {"tag": "v1.2.3"}}
BUN = shutil.which("bun")
needs_bun = pytest.mark.skipif(BUN is None, reason="bun is not installed: bun steps not run")


def bun_flow(make_flow: MakeFlow, script: str, *, runner: str = "bun") -> FlowPackage:
    folder = make_flow(
        "bunflow",
        f"""
        [config]
        greeting = "hi"
        [[steps]]
        name = "s"
        runner = "{runner}"
        script = "step.ts"
        [steps.trigger]
        type = "go"
        """,
        files={"step.ts": script},
        header=False,
    )
    manifest = folder / "flow.toml"
    manifest.write_text('name = "bunflow"\nversion = 1\n' + manifest.read_text())
    return load_flow(folder)


async def run(package: FlowPackage, tmp_path: Path) -> tuple[StepOutcome, list[str]]:
    lines: list[str] = []
    outcome = await run_step(
        StepInvocation(
            package=package,
            step=package.steps[0],
            event=EVENT,
            run_id="run_0123456789ab",
            workspace_root=tmp_path,
            workspace_backend_url="ws://127.0.0.1:9",
            launched_by="test",
        ),
        on_line=lambda stream, line: lines.append(f"{stream}: {line}"),
    )
    return outcome, lines


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("export default async function (context) { return {status: 'completed'} }", True),
        ("const step = () => ({status: 'completed'});\nexport { step as default };", True),
        ("export default defineBunFlow(async () => ({status: 'changed'}))", True),
        ("console.log('FLOW_RESULT ' + JSON.stringify({status: 'completed'}))", False),
        ("// mentions default exports only in prose: exports by default nothing", False),
    ],
)
def test_module_style_is_told_apart_as_codex_flows_does(
    tmp_path: Path, source: str, module: bool
) -> None:
    script = tmp_path / "step.ts"
    script.write_text(source, encoding="utf-8")
    assert is_module_style(script) is module
    argv = bun_argv("/usr/bin/bun", script)
    assert argv == (
        ["/usr/bin/bun", str(MODULE_RUNNER), str(script)]
        if module
        else ["/usr/bin/bun", str(script)]
    )


def test_the_module_runner_ships_with_the_package() -> None:
    assert MODULE_RUNNER.is_file()
    assert "module.default(context)" in MODULE_RUNNER.read_text(encoding="utf-8")


@needs_bun
async def test_a_raw_bun_script_reads_its_context_and_reports(
    make_flow: MakeFlow, tmp_path: Path
) -> None:
    script = """
    const context = JSON.parse(await Bun.stdin.text());
    console.log(`tag ${context.flow.event.payload.tag} version ${context.flow.version}`);
    const result = {status: "changed", message: context.flow.config.greeting};
    console.log("FLOW_RESULT " + JSON.stringify(result));
    """
    outcome, lines = await run(bun_flow(make_flow, script), tmp_path)
    assert (outcome.status, outcome.flow_status, outcome.error) == (
        Status.COMPLETED,
        "changed",
        None,
    )
    assert outcome.result == {"status": "changed", "message": "hi"}
    assert "stdout: tag v1.2.3 version 1" in lines


@needs_bun
async def test_a_module_style_step_returns_its_result(make_flow: MakeFlow, tmp_path: Path) -> None:
    script = """
    export default async function (context) {
      console.log(`run ${context.runtime.runId} on ${context.flow.event.id}`);
      return {status: "completed", artifacts: {step: context.flow.step}};
    }
    """
    outcome, lines = await run(bun_flow(make_flow, script), tmp_path)
    assert outcome.error is None, outcome.stderr_tail
    assert outcome.result == {"status": "completed", "artifacts": {"step": "s"}}
    assert "stdout: run run_0123456789ab on evt-bun" in lines


@needs_bun
@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "export const notDefault = 1;\nexport { notDefault as default };",
            "Bun module flow step must export a default handler function",
        ),
        (
            "export default () => ({message: 'no status'})",
            "Bun module flow step must return a FlowResult object",
        ),
        (
            "export default () => { throw new Error('upstream tag vanished') }",
            "upstream tag vanished",
        ),
    ],
)
async def test_a_module_step_that_goes_wrong_is_failed_with_codex_flows_message(
    make_flow: MakeFlow, tmp_path: Path, script: str, message: str
) -> None:
    outcome, lines = await run(bun_flow(make_flow, script), tmp_path)
    # The runner exits 0 and reports the failure as the step's own FLOW_RESULT.
    assert (outcome.exit_code, outcome.flow_status) == (0, "failed"), outcome.stderr_tail
    assert outcome.result == {"status": "failed", "message": message}
    if "throw" in script:
        assert "Error: upstream tag vanished" in outcome.stderr_tail
        assert any(line.startswith("stderr:") and "at " in line for line in lines)


async def test_a_code_mode_step_loads_but_is_refused_when_run(
    make_flow: MakeFlow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = bun_flow(make_flow, "text('hello')", runner="code-mode")
    monkeypatch.delenv("CODEX_FLOWS_ENABLE_CODE_MODE", raising=False)
    monkeypatch.delenv("CODEX_FLOWS_MODE", raising=False)
    outcome, _ = await run(package, tmp_path)
    assert outcome.flow_status == "failed"
    assert outcome.error == "Code Mode flow step bunflow/s requires CODEX_FLOWS_ENABLE_CODE_MODE=1"
    monkeypatch.setenv("CODEX_FLOWS_MODE", "code-mode")
    outcome, _ = await run(package, tmp_path)
    assert outcome.flow_status == "failed"
    assert "bunflow/s needs a Codex app-server to run in" in (outcome.error or "")
