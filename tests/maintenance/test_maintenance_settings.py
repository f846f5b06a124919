"""Settings resolution: flow config, then env, then the event's options (SPEC §7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workspace_adapter.base.flags import env_flag
from workspace_adapter.maintenance.settings import (
    FlowConfig,
    ForkNotConfigured,
    SettingsError,
    load_config,
    resolve_settings,
    select_fork,
    tag_matches,
)

ROOT = Path("/srv/ws")


def settings(env: dict[str, str] | None = None, options: object = None, **config: object):  # type: ignore[no-untyped-def]
    payload = {"repo": "peezy-tech/patch-moi-harness"}
    if options is not None:
        payload["options"] = options  # type: ignore[assignment]
    return resolve_settings(
        load_config(config), workspace_root=ROOT, payload=payload, env=env or {}
    )


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "yes", "on", " On "])
def test_env_flag_true_words(word: str) -> None:
    assert env_flag(word)


@pytest.mark.parametrize("word", ["0", "false", "no", "off", "", "2", "y"])
def test_env_flag_anything_else_is_false(word: str) -> None:
    assert not env_flag(word)


def test_defaults_are_the_spec_values_and_paths_resolve_against_the_root() -> None:
    s = settings()
    assert s.fetch is True and s.push is False
    assert s.fork_path == ROOT / "harness" / "fork"
    assert s.upstream_repo_url == str(ROOT / "harness" / "remotes" / "upstream.git")
    assert s.push_remotes == ("origin", "jojo")
    assert s.verify_commands == ("npm test", "npm run pack:dry-run")


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/peezy-tech/patch-moi-harness.git",
        "git@github.com:a/b.git",
        "/abs/up.git",
    ],
)
def test_remote_urls_are_left_alone(url: str) -> None:
    assert settings(upstream_repo_url=url).upstream_repo_url == url


def test_env_overrides_config() -> None:
    s = settings(env={"CODEX_FLOW_FETCH": "0", "CODEX_FLOW_PUSH": "yes"})
    assert s.fetch is False and s.push is True


def test_options_fetch_is_honoured_both_ways() -> None:
    assert settings(options={"fetch": False}).fetch is False
    assert settings(env={"CODEX_FLOW_FETCH": "0"}, options={"fetch": True}).fetch is True
    assert settings(env={"CODEX_FLOW_FETCH": "0"}, options={"fetch": "1"}).fetch is True


def test_options_push_can_only_turn_pushing_off() -> None:
    assert settings(options={"push": True}).push is False
    assert settings(push=False, options={"push": "1"}).push is False
    assert settings(env={"CODEX_FLOW_PUSH": "1"}, options={"push": False}).push is False
    assert settings(env={"CODEX_FLOW_PUSH": "1"}, options={"push": True}).push is True


def test_unknown_config_key_is_named() -> None:
    with pytest.raises(SettingsError, match="verify_comands"):
        load_config({"verify_comands": ["true"]})


def test_wrong_type_is_named() -> None:
    with pytest.raises(SettingsError, match="`fetch`"):
        load_config({"fetch": "sometimes"})


def test_option_like_branch_is_refused() -> None:
    with pytest.raises(SettingsError, match="target_branch"):
        load_config({"target_branch": "--upload-pack=evil"})


def test_flow_toml_config_is_exactly_the_spec() -> None:
    import tomllib

    flow = Path(__file__).resolve().parents[2] / "flows" / "patch-moi-harness" / "flow.toml"
    config = tomllib.loads(flow.read_text())["config"]
    assert load_config(config) == FlowConfig(fork="harness")
    assert config == {
        "fork": "harness",
        "fork_repo": "harness/fork",
        "fork_repo_full_name": "matamune-peezy/patch-moi-harness",
        "target_branch": "main",
        "upstream_remote": "upstream",
        "upstream_repo_url": "harness/remotes/upstream.git",
        "expected_repo": "peezy-tech/patch-moi-harness",
        "fetch": True,
        "push": False,
        "push_remotes": ["origin", "jojo"],
        "verify_commands": ["npm test", "npm run pack:dry-run"],
    }


FORKS = [
    {"name": "alpha", "path": "forks/alpha", "repo": "acme/alpha", "push_remotes": ["origin"]},
    {"name": "beta", "path": "/abs/beta", "upstream_url": "git@h:acme/beta.git"},
]


def test_select_fork_lays_the_entry_over_the_config() -> None:
    config = select_fork(load_config({"forks": FORKS}), {"repo": "acme/alpha", "tag": "v1"})
    s = resolve_settings(config, workspace_root=ROOT, payload={}, env={})
    assert (s.fork_name, s.fork_path, s.expected_repo) == (
        "alpha",
        ROOT / "forks/alpha",
        "acme/alpha",
    )
    # The built-in flow's defaults (the tutorial's) never leak into another fork.
    assert (s.fork_repo_full_name, s.upstream_repo_url, s.verify_commands) == ("alpha", "", ())
    assert s.push is False and s.push_remotes == ("origin",) and s.release_tags == "*"
    beta = select_fork(load_config({"forks": FORKS}), {"fork": "beta"})
    assert (beta.fork_repo, beta.upstream_repo_url, beta.expected_repo) == (
        "/abs/beta",
        "git@h:acme/beta.git",
        "",
    )


def test_a_package_naming_its_fork_keeps_its_own_keys_where_the_entry_is_silent() -> None:
    raw = {"fork": "alpha", "fork_repo_full_name": "me/alpha", "forks": FORKS[:1]}
    config = select_fork(load_config(raw), {"fork": "alpha"})
    assert config.fork_repo_full_name == "me/alpha"
    assert config.upstream_repo_url == "harness/remotes/upstream.git"
    assert config.verify_commands == []  # the entry says it: the entry wins


@pytest.mark.parametrize("payload", [{"repo": "acme/gamma"}, {"fork": "gamma"}, {}])
def test_an_event_naming_no_configured_fork_is_refused(payload: dict[str, str]) -> None:
    with pytest.raises(ForkNotConfigured, match="no configured fork"):
        select_fork(load_config({"forks": FORKS}), payload)


@pytest.mark.parametrize(
    ("pattern", "tag", "ok"),
    [
        ("v*", "v1.2.3", True),
        ("v*", "1.2.3", False),
        (r"re:v\d+", "v12", True),
        (r"re:v\d+", "v1x", False),
    ],
)
def test_release_tags_glob_or_regex(pattern: str, tag: str, ok: bool) -> None:
    assert tag_matches(pattern, tag) is ok
