"""Settings resolution: flow config, then env, then the event's options (SPEC §7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workspace_adapter.maintenance.settings import (
    FlowConfig,
    SettingsError,
    env_flag,
    load_config,
    resolve_settings,
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
    assert load_config(config) == FlowConfig()
    assert config == {
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
