"""How a bun step runs: as a script, or through the module runner shipped with this package.

codex-flows runs a step whose source has a default export (``export default``, ``as default``
or ``defineBunFlow(``) through a small module runner that calls ``module.default(context)``
and prints the returned FlowResult; a plain script prints its own ``FLOW_RESULT`` line. A
``code-mode`` step needs a Codex app-server to run in; this backend loads such a step but
refuses to run it, saying why.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from workspace_adapter.base.flags import env_flag

MODULE_RUNNER = Path(__file__).with_name("bun_module_runner.mjs")
_MODULE_STYLE = re.compile(r"\bexport\s+default\b|\bas\s+default\b|\bdefineBunFlow\s*\(")


def is_module_style(script: Path) -> bool:
    """True when ``script`` is a module whose default export is the step (codex-flows' test)."""
    try:
        source = script.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False  # the start fails on the script itself, with its own message
    return _MODULE_STYLE.search(source) is not None


def bun_argv(bun: str, script: Path) -> list[str]:
    """The command line of a bun step: the module runner for module-style steps."""
    if is_module_style(script):
        return [bun, str(MODULE_RUNNER), str(script)]
    return [bun, str(script)]


def code_mode_refusal(flow: str, step: str, environ: Mapping[str, str] | None = None) -> str:
    """Why the ``code-mode`` step ``flow/step`` does not run here, as its ``failed`` reason.

    Disabled (the default), the message is codex-flows' own; enabled, it says what is missing.
    """
    env = os.environ if environ is None else environ
    enabled = (
        env_flag(env.get("CODEX_FLOWS_ENABLE_CODE_MODE"))
        or env.get("CODEX_FLOWS_MODE", "").strip() == "code-mode"
    )
    if not enabled:
        return f"Code Mode flow step {flow}/{step} requires CODEX_FLOWS_ENABLE_CODE_MODE=1"
    return (
        f"Code Mode flow step {flow}/{step} needs a Codex app-server to run in, and this "
        "backend does not start one; run the flow with codex-flows, or rewrite the step for "
        "the bun runner"
    )
