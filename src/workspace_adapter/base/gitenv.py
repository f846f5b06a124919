"""The environment git runs in: ours, minus what would point it at another repository."""

from __future__ import annotations

import os
from collections.abc import Mapping

# Configuration and transport variables an operator sets on purpose; everything else under
# GIT_* describes some other repository (pre-commit issue #300) and is dropped.
_KEPT_GIT_VARS = frozenset(
    {
        "GIT_EXEC_PATH",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSL_CAINFO",
        "GIT_SSL_NO_VERIFY",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_HTTP_PROXY_AUTHMETHOD",
        "GIT_ALLOW_PROTOCOL",
        "GIT_ASKPASS",
    }
)


def no_git_env(
    env: Mapping[str, str] | None = None, *, keep_settings: bool = True
) -> dict[str, str]:
    """``env`` (default: ours) without the ``GIT_*`` variables that would redirect git.

    ``keep_settings=False`` drops the operator's git settings too (every ``GIT_*``): for git
    whose results must depend on our own inputs alone, as the harness's reproducible shas.
    """
    source = os.environ if env is None else env
    return {
        k: v
        for k, v in source.items()
        if not k.startswith("GIT_")
        or (
            keep_settings
            and (k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")) or k in _KEPT_GIT_VARS)
        )
    }
