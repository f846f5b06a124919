"""base/gitenv.py: the GIT_* variables a git command of ours inherits."""

from __future__ import annotations

from workspace_adapter.base.gitenv import no_git_env

ENV = {
    "PATH": "/usr/bin",
    "GIT_DIR": "/elsewhere/.git",
    "GIT_WORK_TREE": "/elsewhere",
    "GIT_SSH_COMMAND": "ssh -i key",
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "i18n.commitEncoding",
    "GIT_CONFIG_VALUE_0": "ISO-8859-1",
}


def test_the_operators_settings_stay_and_another_repository_goes() -> None:
    assert no_git_env(ENV) == {
        "PATH": "/usr/bin",
        "GIT_SSH_COMMAND": "ssh -i key",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "i18n.commitEncoding",
        "GIT_CONFIG_VALUE_0": "ISO-8859-1",
    }


def test_without_settings_no_git_variable_stays() -> None:
    assert no_git_env(ENV, keep_settings=False) == {"PATH": "/usr/bin"}
