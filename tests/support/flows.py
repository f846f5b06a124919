"""Trivial flow packages for tests that run a real daemon: one step each, keyed by event type."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

FLOWS: dict[str, str] = {
    # The flow of SPEC appendix A's codex-flows session (tests/backend/test_backend_compat.py).
    "trivial": """
        name = "trivial"
        [[steps]]
        name = "noop"
        runner = "command"
        command = ['printf', 'FLOW_RESULT {"status":"completed"}\\n']
        [steps.trigger]
        type = "load.trivial"
    """,
    "demo": """
        name = "demo"
        version = "1.0.0"
        [[steps]]
        name = "hello"
        runner = "command"
        command = ['printf', 'hello\\nFLOW_RESULT {"status":"completed"}\\n']
        [steps.trigger]
        type = "demo.event"
    """,
    "schema-demo": """
        name = "schema-demo"
        [[steps]]
        name = "greet"
        runner = "command"
        command = ['printf', 'FLOW_RESULT {"status":"completed"}\\n']
        [steps.trigger]
        type = "schema.event"
        schema = "schema.json"
    """,
    "sleeper": """
        name = "sleeper"
        [[steps]]
        name = "nap"
        runner = "command"
        command = ["sh", "-c", "sleep 300 & echo child $!; echo started; wait"]
        concurrency = 8
        [steps.trigger]
        type = "sleep.event"
    """,
    "tails": """
        name = "tails"
        [[steps]]
        name = "long"
        runner = "python"
        script = "tails.py"
        concurrency = 8
        [steps.trigger]
        type = "tails.event"
    """,
    "flood": """
        name = "flood"
        [[steps]]
        name = "spew"
        runner = "python"
        script = "flood.py"
        concurrency = 4
        [steps.trigger]
        type = "flood.event"
    """,
}

FLOOD_SCRIPT = """
import json, sys
context = json.loads(sys.stdin.readline())
lines = int(context["flow"]["event"]["payload"].get("lines", 1000))
chunk = ("x" * 400 + "\\n") * 100
for _ in range(lines // 100):
    sys.stdout.write(chunk)
sys.stdout.flush()
print('FLOW_RESULT {"status": "completed"}')
"""


TAILS_SCRIPT = """
import sys
sys.stdin.readline()
for _ in range(1200):
    print("y" * 60)
    print("z" * 60, file=sys.stderr)
print('FLOW_RESULT {"status": "completed"}')
"""

EXTRA_FILES: dict[str, dict[str, str]] = {
    "schema-demo": {
        "schema.json": json.dumps(
            {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
        )
    },
    "flood": {"flood.py": FLOOD_SCRIPT},
    "tails": {"tails.py": TAILS_SCRIPT},
}


def write_flow(root: Path, name: str) -> Path:
    """The flow package ``name`` of :data:`FLOWS` under ``root/flows/``; returns ``root``."""
    folder = root / "flows" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.toml").write_text(textwrap.dedent(FLOWS[name]))
    for file_name, text in EXTRA_FILES.get(name, {}).items():
        (folder / file_name).write_text(text)
    return root


def write_flows(root: Path) -> Path:
    """A workspace root with every trivial flow above under ``flows/``."""
    for name in FLOWS:
        write_flow(root, name)
    return root
