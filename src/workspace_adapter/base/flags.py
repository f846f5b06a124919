"""How an environment variable says yes: ``1 true yes on`` (any case); anything else is no."""

from __future__ import annotations

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def env_flag(value: str | None) -> bool:
    """True when ``value`` is one of :data:`TRUE_WORDS`, ignoring case and spaces."""
    return value is not None and value.strip().lower() in TRUE_WORDS
