"""The CLI wiring: common flags in either position, exit codes, the error handler."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workspace_adapter import cli, cliparser
from workspace_adapter.base import paths
from workspace_adapter.base.errors import UserError, error_handler


def test_common_flags_before_or_after_the_subcommand(tmp_path: Path) -> None:
    parser = cliparser.build_parser()
    before = parser.parse_args(["--workspace-root", str(tmp_path), "--mode", "actions", "tick"])
    after = parser.parse_args(["tick", "--workspace-root", str(tmp_path), "--mode", "actions"])
    for ns in (before, after):
        g = cli.globals_of(ns)
        assert g.workspace_root == tmp_path.resolve()
        assert g.mode == "actions"


def test_backend_url_defaults_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEX_WORKSPACE_BACKEND_WS_URL", "ws://127.0.0.1:9")
    g = cli.globals_of(cliparser.build_parser().parse_args(["tick"]))
    assert g.backend_url == "ws://127.0.0.1:9"
    monkeypatch.delenv("CODEX_WORKSPACE_BACKEND_WS_URL")
    g = cli.globals_of(cliparser.build_parser().parse_args(["tick"]))
    assert g.backend_url == "ws://127.0.0.1:3586"


def test_bad_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["tick", "--no-such-flag"])
    assert exc.value.code == 2


def test_workspace_root_is_found_walking_up(tmp_path: Path) -> None:
    (tmp_path / ".codex").mkdir()
    (tmp_path / ".codex" / "workspace.toml").write_text("[workspace]\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert paths.resolve_root(None, cwd=deep) == tmp_path.resolve()
    (tmp_path / "a" / "workspace.toml").write_text("[workspace]\n")
    assert paths.resolve_root(None, cwd=deep) == (tmp_path / "a").resolve()


def test_user_error_is_one_line_with_its_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc, error_handler(None):
        raise UserError("workspace.toml:3: workspace.tasks[0].id: bad", 2)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: workspace.toml:3: workspace.tasks[0].id: bad"


def test_unexpected_error_leaves_a_traceback_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc, error_handler(tmp_path):
        raise RuntimeError("boom")
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "boom" in err
    logs = list((tmp_path / ".workspace" / "logs").glob("crash-*.log"))
    assert len(logs) == 1
    assert "RuntimeError: boom" in logs[0].read_text()
    assert str(logs[0]) in err


def test_only_the_named_command_is_built_and_help_lists_every_command() -> None:
    assert (
        cliparser.command_named(["--workspace-root", "x", "--mode=local", "run", "hello"]) == "run"
    )
    assert cliparser.command_named(["--help"]) is None
    assert cliparser.command_named(["nope"]) is None
    assert cliparser.command_named([]) is None
    help_text = cliparser.build_parser().format_help()
    for name in cliparser.COMMANDS:
        assert name in help_text
    ns = cliparser.build_parser("run").parse_args(["run", "hello", "--json"])
    assert (ns.command, ns.task_id, ns.json) == ("run", "hello", True)


def test_attempts_lists_by_default_and_takes_an_action_with_an_id() -> None:
    parser = cliparser.build_parser()
    listed = parser.parse_args(["attempts", "--status", "failed", "--json"])
    assert (listed.action, listed.attempt_id, listed.status, listed.json) == (
        None,
        None,
        "failed",
        True,
    )
    retry = parser.parse_args(["attempts", "retry", "att_1"])
    assert (retry.action, retry.attempt_id) == ("retry", "att_1")
    assert cli.main(["attempts", "retry"]) == 2


def test_a_reader_that_leaves_early_is_no_crash(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "workspace.toml").write_text(
        "[workspace]\n"
        + "".join(
            f'[[workspace.tasks]]\nid = "t{i}"\nkind = "command"\ncommand = ["true"]\n'
            for i in range(2000)
        )
    )
    code = (
        "import sys; from workspace_adapter.cli import main; "
        "sys.exit(main(['--workspace-root', sys.argv[1], 'doctor']))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141, err
    assert "unexpected" not in err and "Traceback" not in err
    assert not (tmp_path / ".workspace" / "logs").exists()


# Modules a quick `run` or `tick` does without while the config is unchanged: most cost more to
# import than its whole budget; tomllib (its patterns compiled at import) about a third of it.
HEAVY = (
    "msgspec",
    "structlog",
    "anyio",
    "websockets",
    "jsonschema",
    "cronsim",
    "uvicorn",
    "tomllib",
    "argparse",  # with the full parser of cliparser.py: the quick parse reads plain forms
)

_IMPORTS_AFTER = """
import json, sys
from workspace_adapter.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


def heavy_imports(root: Path, *argv: str) -> tuple[int, list[str]]:
    script = _IMPORTS_AFTER.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", script, "--workspace-root", str(root), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["code"], result["heavy"]


def test_run_and_tick_load_only_the_standard_library_while_the_config_is_unchanged(
    tmp_path: Path,
) -> None:
    toml = '[workspace]\nname = "quick"\n'
    for index in range(5):
        toml += f'[[workspace.tasks]]\nid = "t{index}"\nkind = "command"\ncommand = ["true"]\n'
    (tmp_path / "workspace.toml").write_text(toml)
    # The first run checks workspace.toml with the schema (msgspec) and caches the result.
    code, heavy = heavy_imports(tmp_path, "run", "t0")
    assert code == 0 and "msgspec" in heavy
    for argv in (
        ("run", "t0"),
        ("run", "t1", "--json"),
        ("--log-format", "json", "--log-level", "debug", "run", "t2"),
        ("tick",),
        ("tick", "--json"),
    ):
        assert heavy_imports(tmp_path, *argv) == (0, []), argv
    # An edit is checked again (and still reported as before when it is invalid).
    (tmp_path / "workspace.toml").write_text(toml.replace('command = ["true"]', "command = 1", 1))
    done = subprocess.run(
        [sys.executable, "-m", "workspace_adapter", "--workspace-root", str(tmp_path), "tick"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.endswith("workspace.tasks[0].command: expected array, got int\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "harness"],
        ["run", "harness", "--json", "--no-wait"],
        ["--workspace-root", "/w", "run", "--json", "harness", "--mode=actions"],
        ["--backend-url=ws://h:1", "tick", "--dry-run", "--log-level", "debug", "--json"],
        ["tick", "--workspace-root=", "--json", "--json"],
        ["--log-format", "json", "run", "harness", "--log-level=info"],
    ],
)
def test_the_quick_parse_reads_plain_run_and_tick_as_argparse_does(argv: list[str]) -> None:
    quick = cli.quick_parse(argv)
    assert quick is not None
    full = vars(cliparser.build_parser(cliparser.command_named(argv)).parse_args(argv))
    assert vars(quick) == full


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", "a", "b"],
        ["run", "a", "--event", "e.json"],
        ["run", "a", "--js"],  # an abbreviation: argparse's to accept
        ["tick", "extra"],
        ["--json", "tick"],
        ["tick", "--mode", "other"],
        ["tick", "--mode", "local", "--mode", "actions"],
        ["tick", "--log-format", "yaml"],
        ["tick", "--workspace-root"],
        ["tick", "--workspace-root", "--json"],
        ["tick", "-h"],
        ["doctor"],
    ],
)
def test_anything_else_goes_to_the_full_parser(argv: list[str]) -> None:
    assert cli.quick_parse(argv) is None


def test_version_and_a_bare_workspace(capsys: pytest.CaptureFixture[str]) -> None:
    from workspace_adapter import __version__

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"workspace {__version__}\n"
    assert cli.main([]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("usage: workspace ")
    for name in cliparser.COMMANDS:
        assert f"\n    {name} " in listed


def _parsers(parser: Any) -> Iterator[Any]:
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_positional_has_help_and_no_help_points_at_the_spec() -> None:
    for parser in _parsers(cliparser.build_parser()):
        for action in parser._actions:
            if not action.option_strings:
                assert action.help, (parser.prog, action.dest)
        text = parser.format_help()
        assert "§" not in text and "SPEC" not in text and "../" not in text, parser.prog


def test_watch_json_reports_one_pass(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "workspace.toml").write_text(
        '[workspace]\n[[workspace.sources]]\nid = "s"\nkind = "git-tags"\n'
        'url = "nowhere.git"\nrepo = "o/r"\n'
    )
    assert cli.main(["--workspace-root", str(tmp_path), "watch", "--json"]) == 2
    assert "add --once" in capsys.readouterr().err
    assert cli.main(["--workspace-root", str(tmp_path), "watch", "--once", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"exitCode": 1, "sourceFailures": 1, "attempts": []}
    assert "s: poll failed" in captured.err


def test_harness_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = str(tmp_path)
    assert cli.main(["--workspace-root", root, "harness", "init", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["upstreamTag"] == "v0.1.3" and len(built["upstreamSha"]) == 40
    assert set(built["remotes"]) == {"upstream", "origin", "jojo"}
    assert cli.main(["--workspace-root", root, "harness", "release", "--json"]) == 0
    cut = json.loads(capsys.readouterr().out)
    assert (cut["tag"], cut["bump"], cut["conflict"]) == ("v0.1.4", "patch", False)
