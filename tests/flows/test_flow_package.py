"""flow.toml loading, discovery across .codex/flows and flows/, and trigger matching."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workspace_adapter.flows.package import (
    FlowConfigError,
    discover_flows,
    load_flow,
    matching_steps,
)

MakeFlow = Callable[..., Path]

PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["repo"],
    "properties": {"repo": {"const": "acme/widget"}, "tag": {"type": "string"}},
}

GOOD = """\
description = "keeps a fork fresh"
[config]
fork_repo = "harness/fork"
push_remotes = ["origin"]

[[steps]]
name = "maintain"
runner = "python"
script = "step.py"
timeout_ms = 2000
concurrency = 3
[steps.trigger]
type = "upstream.release"
schema = "payload.schema.json"

[[steps]]
name = "note"
runner = "command"
command = ["printf", "hi"]
cwd = "work"
[steps.trigger]
type = "note.added"
"""


def good_files() -> dict[str, str | dict[str, object]]:
    return {"step.py": "print('hi')\n", "payload.schema.json": PAYLOAD_SCHEMA, "work/.keep": ""}


def test_load_resolves_paths_and_defaults(make_flow: MakeFlow) -> None:
    folder = make_flow("fresh", GOOD, files=good_files())
    package = load_flow(folder)
    assert (package.name, package.version, package.description) == (
        "fresh",
        "1.2.3",
        "keeps a fork fresh",
    )
    assert package.config == {"fork_repo": "harness/fork", "push_remotes": ["origin"]}
    maintain, note = package.steps
    assert maintain.script == (folder / "step.py").resolve()
    assert maintain.cwd == folder.resolve()
    assert (maintain.timeout_ms, maintain.concurrency) == (2000, 3)
    assert maintain.schema_path == (folder / "payload.schema.json").resolve()
    assert note.command == ("printf", "hi")
    assert note.cwd == (folder / "work").resolve()
    assert (note.timeout_ms, note.concurrency, note.validator) == (300_000, 1, None)


def test_matching_checks_type_and_payload_schema(make_flow: MakeFlow) -> None:
    package = load_flow(make_flow("fresh", GOOD, files=good_files()))
    release = {"id": "e1", "type": "upstream.release", "payload": {"repo": "acme/widget"}}
    [(matched_package, step)] = matching_steps([package], release)
    assert (matched_package.name, step.name) == ("fresh", "maintain")
    # Extra payload keys (taskId, options, …) must not stop a match (SPEC §5).
    extra = {**release, "payload": {"repo": "acme/widget", "taskId": "t", "options": {}}}
    assert len(matching_steps([package], extra)) == 1
    assert matching_steps([package], {**release, "payload": {"repo": "other/repo"}}) == []
    assert matching_steps([package], {**release, "payload": None}) == []
    assert matching_steps([package], {"id": "e2", "type": "nothing"}) == []
    [(_, note)] = matching_steps([package], {"id": "e3", "type": "note.added"})
    assert note.name == "note"


def test_codex_flows_wins_a_name_clash_and_bad_packages_do_not_stop_discovery(
    make_flow: MakeFlow, tmp_path: Path
) -> None:
    make_flow("fresh", GOOD, files=good_files())
    override = make_flow("fresh", GOOD, files=good_files(), under=".codex/flows")
    make_flow("broken", "[[steps]\n")
    make_flow(
        "other",
        """
        [[steps]]
        name = "one"
        runner = "command"
        command = ["true"]
        [steps.trigger]
        type = "x"
        """,
    )
    found = discover_flows(tmp_path)
    assert sorted(p.name for p in found.packages) == ["fresh", "other"]
    assert found.get("fresh") is not None
    assert found.get("fresh").root == override.resolve()  # type: ignore[union-attr]
    [error] = found.errors
    assert str(error).startswith("flows/broken/flow.toml:3: invalid TOML")


def test_two_packages_with_one_name_in_one_folder_is_an_error(
    make_flow: MakeFlow, tmp_path: Path
) -> None:
    make_flow("a", GOOD, files=good_files())
    second = make_flow("b", GOOD, files=good_files())
    toml = (second / "flow.toml").read_text().replace('name = "b"', 'name = "a"')
    (second / "flow.toml").write_text(toml)
    found = discover_flows(tmp_path)
    assert [p.root.name for p in found.packages] == ["a"]
    [error] = found.errors
    assert str(error).startswith("flows/b/flow.toml:1: name: flow name 'a' is already used")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("timeout_ms = 2000", 'timeout_ms = "2s"'),
            "flow.toml:12: steps[0].timeout_ms: Expected `int`, got `str`; fix its value",
        ),
        (
            ('runner = "command"', 'runner = "bash"'),
            "flow.toml:20: steps[1].runner: Invalid enum value 'bash'; "
            "use one of: python, command, bun, code-mode",
        ),
        (
            ('type = "note.added"\n', ""),
            "flow.toml:23: steps[1].trigger.type: Object missing required field `type`; add it",
        ),
        (
            ('cwd = "work"', 'cwd = "nowhere"'),
            "flow.toml:22: steps[1].cwd: folder 'nowhere' does not exist in",
        ),
        (
            ('name = "note"', 'name = "maintain"'),
            "flow.toml:19: steps[1].name: step name 'maintain' is used twice; make it unique",
        ),
        (
            ('script = "step.py"', 'script = "missing.py"'),
            "flow.toml:11: steps[0].script: 'missing.py' does not exist in",
        ),
        (
            ('schema = "payload.schema.json"', 'schema = "nope.json"'),
            "flow.toml:16: steps[0].trigger.schema: schema file 'nope.json' does not exist",
        ),
        (
            ("concurrency = 3", "concurrency = 0"),
            "flow.toml:13: steps[0].concurrency: must be at least 1, got 0",
        ),
        (
            ('command = ["printf", "hi"]', "command = []"),
            "flow.toml:21: steps[1].command: runner 'command' needs a non-empty argv list",
        ),
    ],
)
def test_each_problem_names_file_line_and_key(
    make_flow: MakeFlow, edit: tuple[str, str], expected: str
) -> None:
    folder = make_flow("fresh", GOOD.replace(*edit), files=good_files())
    with pytest.raises(FlowConfigError) as caught:
        load_flow(folder, display_root=folder)
    assert str(caught.value).startswith(expected), str(caught.value)
    assert "\n" not in str(caught.value)


def test_invalid_json_schema_is_caught_at_load_time(make_flow: MakeFlow) -> None:
    files = good_files()
    files["payload.schema.json"] = {"type": "object", "properties": {"repo": {"type": 12}}}
    folder = make_flow("fresh", GOOD, files=files)
    with pytest.raises(FlowConfigError) as caught:
        load_flow(folder, display_root=folder)
    message = str(caught.value)
    assert message.startswith("flow.toml:16: steps[0].trigger.schema: 'payload.schema.json'")
    assert "not a valid JSON Schema at properties/repo/type" in message


def test_schema_that_is_not_json(make_flow: MakeFlow) -> None:
    files = good_files()
    files["payload.schema.json"] = "{nope"
    folder = make_flow("fresh", GOOD, files=files)
    with pytest.raises(FlowConfigError, match=r"cannot read JSON Schema 'payload\.schema\.json'"):
        load_flow(folder)


def test_missing_name_and_steps(make_flow: MakeFlow, tmp_path: Path) -> None:
    folder = make_flow("x", 'version = "1"\n', header=False)
    with pytest.raises(FlowConfigError, match="missing required field `name`; add it"):
        load_flow(folder)
    folder = make_flow("y", "", header=True)
    with pytest.raises(FlowConfigError, match=r"steps: the flow has no \[\[steps\]\]"):
        load_flow(folder)


CODEX_FLOWS_MANIFEST = """\
name = "release-notes"
version = 1
description = "a codex-flows package, as its own examples write them"
owner = "team-x"

[guidance]
skills = ["git", "changelog"]
mood = "calm"

[[steps]]
name = "raw"
runner = "bun"
script = "raw.ts"
retries = 2
[steps.trigger]
type = "upstream.release"
priority = 1

[[steps]]
name = "later"
runner = "code-mode"
script = "later.ts"
"""


def test_a_codex_flows_manifest_loads_with_warnings_for_unknown_keys(tmp_path: Path) -> None:
    folder = tmp_path / "flows" / "release-notes"
    folder.mkdir(parents=True)
    (folder / "flow.toml").write_text(CODEX_FLOWS_MANIFEST, encoding="utf-8")
    (folder / "raw.ts").write_text("console.log('hi')\n", encoding="utf-8")
    (folder / "later.ts").write_text("export default () => ({status: 'completed'})\n")
    found = discover_flows(tmp_path)
    assert found.errors == []
    [package] = found.packages
    # The version is handed to steps as the manifest wrote it: a number stays a number.
    assert package.version == 1 and isinstance(package.version, int)
    assert package.guidance_skills == ("git", "changelog")
    assert [(s.name, s.runner, s.trigger_type) for s in package.steps] == [
        ("raw", "bun", "upstream.release"),
        ("later", "code-mode", None),
    ]
    assert found.warnings == [
        "flows/release-notes/flow.toml:4: owner: unknown key, ignored; "
        "remove it or fix its spelling",
        "flows/release-notes/flow.toml:8: guidance.mood: unknown key, ignored; "
        "remove it or fix its spelling",
        "flows/release-notes/flow.toml:14: steps[0].retries: unknown key, ignored; "
        "remove it or fix its spelling",
        "flows/release-notes/flow.toml:17: steps[0].trigger.priority: unknown key, ignored; "
        "remove it or fix its spelling",
    ]


def test_a_step_without_a_trigger_never_matches(tmp_path: Path) -> None:
    folder = tmp_path / "flows" / "release-notes"
    folder.mkdir(parents=True)
    (folder / "flow.toml").write_text(CODEX_FLOWS_MANIFEST, encoding="utf-8")
    (folder / "raw.ts").write_text("", encoding="utf-8")
    (folder / "later.ts").write_text("", encoding="utf-8")
    packages = discover_flows(tmp_path).packages
    event = {"id": "e", "type": "upstream.release", "payload": {}}
    assert [s.name for _, s in matching_steps(packages, event)] == ["raw"]
    assert matching_steps(packages, {"id": "e", "type": "", "payload": {}}) == []


def test_a_misspelt_key_is_a_warning_and_the_package_still_loads(make_flow: MakeFlow) -> None:
    folder = make_flow(
        "fresh", GOOD.replace("concurrency = 3", "concurency = 3"), files=good_files()
    )
    package = load_flow(folder, display_root=folder)
    assert package.steps[0].concurrency == 1
    assert package.warnings == (
        "flow.toml:13: steps[0].concurency: unknown key, ignored; remove it or fix its spelling",
    )


def test_a_version_that_is_neither_string_nor_number_is_still_an_error(
    make_flow: MakeFlow,
) -> None:
    folder = make_flow("v", GOOD, files=good_files(), header=False)
    manifest = folder / "flow.toml"
    manifest.write_text('name = "v"\nversion = [1]\n' + manifest.read_text(), encoding="utf-8")
    with pytest.raises(FlowConfigError) as caught:
        load_flow(folder, display_root=folder)
    assert str(caught.value).startswith(
        "flow.toml:2: version: Expected `int | float | str`, got `array`"
    )
