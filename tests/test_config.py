"""workspace.toml validation: every bad entry reported at once, as file:line: key.path: problem."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from workspace_adapter.cli import main
from workspace_adapter.local import config, configfile

REPO_ROOT = Path(__file__).resolve().parent.parent

HEAD = '[workspace]\nname = "t"\n'


def problems_of(tmp_path: Path, toml: str) -> list[str]:
    (tmp_path / "workspace.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(config.ConfigError) as info:
        configfile.load(tmp_path)
    assert info.value.exit_code == 2
    return info.value.problems


def test_the_projects_own_workspace_toml_is_valid() -> None:
    loaded = configfile.load(REPO_ROOT)
    harness = loaded.task("harness")
    assert harness.kind == "command"
    assert harness.command == ["workspace", "flow", "run", "patch-moi-harness"]
    assert harness.env == {"CODEX_FLOW_FETCH": "0", "CODEX_FLOW_PUSH": "0"}
    flow = loaded.task("harness-flow")
    assert flow.kind == "flow" and flow.flow == "upstream.release"
    assert flow.event is not None and flow.event.source == "patch.moi.workspace"
    assert flow.event.payload == {"repo": "peezy-tech/patch-moi-harness", "tag": "v0.1.3"}


def test_defaults(tmp_path: Path) -> None:
    (tmp_path / "workspace.toml").write_text(
        '[workspace]\n[[workspace.tasks]]\nid = "a"\nkind = "command"\ncommand = ["true"]\n'
    )
    loaded = configfile.load(tmp_path)
    assert loaded.name == tmp_path.name and loaded.timezone == "UTC"
    task = loaded.tasks[0]
    assert (task.timeout_seconds, task.catchup, task.enabled, task.line) == (
        1800,
        "latest",
        True,
        2,
    )


def test_codex_fallback_location(tmp_path: Path) -> None:
    (tmp_path / ".codex").mkdir()
    (tmp_path / ".codex" / "workspace.toml").write_text(HEAD)
    assert configfile.load(tmp_path).path == tmp_path / ".codex" / "workspace.toml"


# Each case: the entry (after a valid header), the expected line and the expected text.
CASES = {
    "unknown key": (
        'id = "a"\nkind = "command"\ncommand = ["x"]\nbogus = 1\n',
        7,
        "workspace.tasks[0].bogus: unknown key",
    ),
    "wrong type": (
        'id = "a"\nkind = "command"\ncommand = "x"\n',
        6,
        "workspace.tasks[0].command: expected array, got str",
    ),
    "bad cron": (
        'id = "a"\nkind = "command"\ncommand = ["x"]\nschedule = "*/61 * * * *"\n',
        7,
        "workspace.tasks[0].schedule: '*/61 * * * *' is not a valid cron expression",
    ),
    "cron field count": (
        'id = "a"\nkind = "command"\ncommand = ["x"]\nschedule = "* * *"\n',
        7,
        "five fields",
    ),
    "bad duration": (
        'id = "a"\nkind = "command"\ncommand = ["x"]\ntimeout = "15 minutes"\n',
        7,
        "workspace.tasks[0].timeout: '15 minutes' is not a duration",
    ),
    "bad id": (
        'id = "Harness!"\nkind = "command"\ncommand = ["x"]\n',
        4,
        "workspace.tasks[0].id: 'Harness!' is not a valid id",
    ),
    "static event id": (
        'id = "a"\nkind = "flow"\nflow = "x"\n[workspace.tasks.event]\nid = "fixed"\n',
        8,
        "workspace.tasks[0].event.id: event ids are generated",
    ),
    "command needs command": (
        'id = "a"\nkind = "command"\n',
        5,
        "workspace.tasks[0].command: is required for a command task",
    ),
    "flow needs flow": (
        'id = "a"\nkind = "flow"\n',
        5,
        "workspace.tasks[0].flow: is required for a flow task",
    ),
    "catchup enum": (
        'id = "a"\nkind = "command"\ncommand = ["x"]\ncatchup = "sometimes"\n',
        7,
        "workspace.tasks[0].catchup: 'sometimes' is not one of none, latest, all",
    ),
    "kind enum": (
        'id = "a"\nkind = "shell"\n',
        5,
        "workspace.tasks[0].kind: 'shell' is not one of command, flow",
    ),
    "flow key on command": (
        'id = "a"\nkind = "command"\ncommand = ["x"]\nwait = false\n',
        7,
        "workspace.tasks[0].wait: only applies to flow tasks",
    ),
    "nested payload type": (
        'id = "a"\nkind = "flow"\nflow = "x"\nevent = { source = 3 }\n',
        7,
        "workspace.tasks[0].event.source: expected str, got int",
    ),
    "env values": (
        'id = "a"\nkind = "command"\ncommand = ["x"]\nenv = { A = 1 }\n',
        7,
        "workspace.tasks[0].env.A: expected str, got integer (quote the value)",
    ),
    "env value in a sub-table": (
        'id = "a"\nkind = "command"\ncommand = ["x"]\n[workspace.tasks.env]\nOK = "1"\n'
        "PUSH = false\n",
        9,
        "workspace.tasks[0].env.PUSH: expected str, got boolean",
    ),
    "env name with =": (
        'id = "a"\nkind = "command"\ncommand = ["x"]\nenv = { "A=B" = "1" }\n',
        7,
        "workspace.tasks[0].env.A=B: 'A=B' is not a valid environment variable name",
    ),
    "env value with NUL": (
        'id = "a"\nkind = "command"\ncommand = ["x"]\nenv = { A = "x\\u0000y" }\n',
        7,
        "workspace.tasks[0].env.A: must not contain NUL",
    ),
    "command with NUL": (
        'id = "a"\nkind = "command"\ncommand = ["tr\\u0000ue"]\n',
        6,
        "workspace.tasks[0].command: must not contain NUL",
    ),
    "unknown key in the event table": (
        'id = "a"\nkind = "flow"\nflow = "x"\n[workspace.tasks.event]\nsource = "s"\nbogus = 1\n',
        9,
        "workspace.tasks[0].event.bogus: unknown key",
    ),
    "internal field": (
        'id = "a"\nkind = "command"\ncommand = ["x"]\nline = 3\n',
        7,
        "workspace.tasks[0].line: unknown key",
    ),
    "missing id": ('kind = "command"\ncommand = ["x"]\n', 3, "workspace.tasks[0].id: is required"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_invalid_case_names_file_line_and_key(tmp_path: Path, case: str) -> None:
    entry, line, text = CASES[case]
    problems = problems_of(tmp_path, HEAD + "[[workspace.tasks]]\n" + entry)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{tmp_path / 'workspace.toml'}:{line}: "), problems
    assert text in problems[0]


def test_all_bad_entries_are_reported_at_once(tmp_path: Path) -> None:
    toml = textwrap.dedent(
        """\
        [workspace]
        name = "t"
        timezone = "Mars/Olympus"

        [[workspace.tasks]]
        id = "a"
        kind = "command"
        command = ["x"]
        timeout = "1d"

        [[workspace.tasks]]
        id = "b"
        kind = "flow"
        flow = "upstream.release"
        schedule = "*/61 * * * *"
        catchup = "sometimes"
        [workspace.tasks.event]
        id = "static"

        [[workspace.tasks]]
        id = "a"
        kind = "command"
        command = ["y"]

        [[workspace.sources]]
        id = "s"
        kind = "rss"
        url = "x"
        repo = "o/r"

        [workspace.notify]
        command = "mail"
        """
    )
    problems = problems_of(tmp_path, toml)
    where = [p.split(": ", 2)[:2] for p in problems]
    name = str(tmp_path / "workspace.toml")
    assert [f"{name}:3", "workspace.timezone"] in where
    assert [f"{name}:9", "workspace.tasks[0].timeout"] in where
    assert [f"{name}:15", "workspace.tasks[1].schedule"] in where
    assert [f"{name}:16", "workspace.tasks[1].catchup"] in where
    assert [f"{name}:18", "workspace.tasks[1].event.id"] in where
    assert [f"{name}:21", "workspace.tasks[2].id"] in where
    assert [f"{name}:27", "workspace.sources[0].kind"] in where
    assert [f"{name}:32", "workspace.notify.command"] in where
    assert len(problems) == 8, problems


def test_unknown_top_level_and_workspace_keys(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, 'other = 1\n[workspace]\nnmae = "x"\n')
    assert any(
        p.endswith(":1: other: unknown key (everything lives under [workspace])") for p in problems
    )
    assert any(":3: workspace.nmae: unknown key" in p for p in problems)


def test_invalid_toml_gives_its_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, '[workspace]\nname = "t"\n\n[[workspace.tasks]]\nid = \n')
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'workspace.toml'}:5: invalid TOML")


def test_valid_sources_and_notify_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "workspace.toml").write_text(
        HEAD
        + '[[workspace.sources]]\nid = "upstream"\nkind = "git-tags"\n'
        + 'url = "harness/remotes/upstream.git"\nrepo = "peezy-tech/patch-moi-harness"\n'
        + 'tag_pattern = "v\\\\d+\\\\.\\\\d+\\\\.\\\\d+"\n'
        + '[workspace.notify]\ncommand = ["cat"]\n'
    )
    loaded = configfile.load(tmp_path)
    assert loaded.sources[0].prime_only is True
    assert loaded.sources[0].event_type == "upstream.release"
    assert loaded.notify is not None and loaded.notify.command == ["cat"]


def test_the_cli_exits_2_with_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = HEAD + '[[workspace.tasks]]\nid = "a"\nkind = "command"\n'
    toml += '[[workspace.tasks]]\nid = "b"\nkind = "flow"\nflow = "x"\nschedule = "nope"\n'
    (tmp_path / "workspace.toml").write_text(toml)
    for command in (["run", "a"], ["tick"], ["tick", "--dry-run"]):
        assert main(["--workspace-root", str(tmp_path), *command]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err == [
            f"error: {tmp_path / 'workspace.toml'}:5: workspace.tasks[0].command: "
            "is required for a command task",
            f"error: {tmp_path / 'workspace.toml'}:10: workspace.tasks[1].schedule: "
            "'nope' is not a valid cron expression (five fields: minute hour day month weekday)",
        ]
    assert not (tmp_path / ".workspace").exists()


def test_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workspace-root", str(tmp_path), "run", "x"]) == 2
    assert "no workspace.toml in" in capsys.readouterr().err


def test_the_file_is_never_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "workspace.toml"
    path.write_text(HEAD + "# a comment\n")
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    configfile.load(tmp_path)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_an_unknown_notify_key_is_named_with_its_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, HEAD + '[workspace.notify]\ncommand = ["cat"]\nfoo = 1\n')
    assert problems == [f"{tmp_path / 'workspace.toml'}:5: workspace.notify.foo: unknown key"]


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "workspace.toml").write_bytes(b"\xef\xbb\xbf" + HEAD.encode())
    assert configfile.load(tmp_path).name == "t"


# --- the validated-config cache ------------------------------------------------------------


def test_the_cache_gives_the_same_config_and_sees_every_edit(tmp_path: Path) -> None:
    toml = HEAD + '[[workspace.tasks]]\nid = "a"\nkind = "command"\ncommand = ["true"]\n'
    toml += 'env = { X = "1" }\nschedule = "*/5 * * * *"\n'
    toml += '[[workspace.tasks]]\nid = "f"\nkind = "flow"\nflow = "x"\n'
    toml += '[workspace.tasks.event]\nsource = "s"\n[workspace.tasks.event.payload]\nk = [1, 2]\n'
    toml += '[[workspace.sources]]\nid = "up"\nkind = "git-tags"\nurl = "u"\nrepo = "o/r"\n'
    toml += '[workspace.notify]\ncommand = ["echo"]\n'
    path = tmp_path / "workspace.toml"
    path.write_text(toml)
    checked = configfile.load(tmp_path)
    assert configfile.load_cached(tmp_path) == checked  # checked, then written
    assert configfile.cache_path(tmp_path).is_file()
    assert (tmp_path / ".workspace" / ".gitignore").read_text() == "*\n"
    assert configfile.load_cached(tmp_path) == checked  # read back
    # An edit of the same size, right away (same mtime tick on a coarse clock): still seen.
    path.write_text(toml.replace('id = "a"', 'id = "b"'))
    assert [t.id for t in configfile.load_cached(tmp_path).tasks] == ["b", "f"]
    # An edit into something invalid reports its problem, with file and line, every time.
    path.write_text(toml.replace('command = ["true"]', 'command = "true"'))
    for _ in range(2):
        with pytest.raises(config.ConfigError) as info:
            configfile.load_cached(tmp_path)
        assert info.value.problems == [
            f"{path}:6: workspace.tasks[0].command: expected array, got str"
        ]


def test_a_stale_or_broken_cache_is_checked_again(tmp_path: Path) -> None:
    path = tmp_path / "workspace.toml"
    path.write_text(HEAD + '[[workspace.tasks]]\nid = "a"\nkind = "command"\ncommand = ["x"]\n')
    configfile.load_cached(tmp_path)
    configfile.cache_path(tmp_path).write_text("{not json")
    assert configfile.load_cached(tmp_path).task("a").command == ["x"]
    # Written long ago, not racy: the stat key alone decides, and a changed size changes it.
    old = 1_000_000_000
    os.utime(path, (old, old))
    configfile.load_cached(tmp_path)
    path.write_text(HEAD + '[[workspace.tasks]]\nid = "a"\nkind = "command"\ncommand = ["xy"]\n')
    os.utime(path, (old, old))
    assert configfile.load_cached(tmp_path).task("a").command == ["xy"]


def test_load_cached_without_write_leaves_no_file(tmp_path: Path) -> None:
    (tmp_path / "workspace.toml").write_text(HEAD)
    assert configfile.load_cached(tmp_path, write=False).name == "t"
    assert not (tmp_path / ".workspace").exists()


def test_the_projects_own_workspace_toml_describes_the_harness_as_one_fork() -> None:
    loaded = configfile.load(REPO_ROOT)
    [fork] = loaded.forks
    assert (fork.name, fork.path, fork.branch) == ("harness", "harness/fork", "main")
    assert (fork.upstream_remote, fork.upstream_url) == ("upstream", "harness/remotes/upstream.git")
    assert fork.repo == "peezy-tech/patch-moi-harness"
    assert (fork.push, fork.push_remotes) == (False, ["origin", "jojo"])
    assert fork.verify_commands == ["npm test", "npm run pack:dry-run"]
    assert loaded.sources[0].fork == "harness"


def test_fork_entries_are_checked_like_the_rest(tmp_path: Path) -> None:
    text = (
        HEAD
        + '[[workspace.forks]]\nname = "Bad Name"\npath = "a"\nrelease_tags = "re:("\n'
        + 'push = "no"\nrepo = "x"\nexpected_repo = "x"\n'
        + '[[workspace.sources]]\nid = "s"\nkind = "git-tags"\nfork = "nope"\n'
    )
    problems = problems_of(tmp_path, text)
    assert any("workspace.forks[0].push: expected bool" in p for p in problems), problems
    assert any(":6: workspace.forks[0].release_tags: bad regex" in p for p in problems), problems
    assert any(
        "workspace.forks[0].name: 'Bad Name' is not a valid fork name" in p for p in problems
    )
    assert any("workspace.forks[0].expected_repo: give `repo` or" in p for p in problems)
    assert any(
        ":13: workspace.sources[0].fork: no fork named 'nope' (configured forks: none)" in p
        for p in problems
    ), problems
    assert any("workspace.sources[0].url: is required (or name a `fork`" in p for p in problems)
