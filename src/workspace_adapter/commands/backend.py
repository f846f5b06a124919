"""``workspace backend``: run the daemon in the foreground."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict, Unpack

from workspace_adapter.base.errors import UserError
from workspace_adapter.base.paths import DEFAULT_BACKEND_HOST, DEFAULT_BACKEND_PORT

# Where the names of --public-host come from when the flag is not given (comma-separated).
PUBLIC_HOST_ENV = "CODEX_WORKSPACE_BACKEND_PUBLIC_HOST"
# Seconds a client may take to send a request's head, and again its body (default 10).
READ_TIMEOUT_ENV = "CODEX_WORKSPACE_BACKEND_READ_TIMEOUT"

if TYPE_CHECKING:
    from workspace_adapter.backend.server import BackendOptions


def _read_secret(file: str | None, env_name: str, flag: str, what: str) -> str | None:
    """From ``file`` when given (keeps it out of ``ps``), else the environment variable.

    An unset or empty variable means none; one of only whitespace is refused, as is a blank
    file: such a value would be taken and then match nothing a client sends.
    """
    if file:
        try:
            value = Path(file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"cannot read {file}: {exc.strerror or exc}") from None
        if not value:
            raise UserError(f"{flag} {file} is blank; write {what} into it, or drop {flag}")
        return value
    value = os.environ.get(env_name) or ""
    if value and not value.strip():
        raise UserError(f"{env_name} is blank; set it to {what}, or unset it")
    return value.strip() or None


class BackendFlags(TypedDict):
    """The daemon's flags as the CLI parsed them; ``workspace backend`` and ``serve`` take them."""

    host: str | None
    port: int | None
    cwd: str | None
    data_dir: str | None
    token_file: str | None
    secret_file: str | None
    allow_origin: list[str]
    concurrency: int
    env_allow: list[str]
    app_server_url: str | None
    local_app_server: bool
    public_host: NotRequired[list[str]]
    executor: NotRequired[str | None]
    broker: NotRequired[str | None]


def backend_options(flags: BackendFlags, *, default_cwd: Path | None = None) -> BackendOptions:
    """The daemon's options from its flags, then its environment variables, then defaults.

    ``default_cwd`` is the root when neither ``--cwd`` nor ``CODEX_FLOW_BACKEND_CWD`` names
    one: the workspace root (``--workspace-root``, else the folder of the nearest
    ``workspace.toml``, else the current folder).
    """
    from workspace_adapter.backend.server import READ_TIMEOUT, BackendOptions

    fallback = default_cwd or Path(os.getcwd())
    root = Path(flags["cwd"] or os.environ.get("CODEX_FLOW_BACKEND_CWD") or fallback).resolve()
    data = flags["data_dir"] or os.environ.get("CODEX_FLOW_BACKEND_DATA_DIR")
    port = flags["port"]
    env_port = os.environ.get("CODEX_WORKSPACE_BACKEND_PORT")
    if port is None and env_port:
        try:
            port = int(env_port)
        except ValueError:
            raise UserError(f"CODEX_WORKSPACE_BACKEND_PORT is not a number: {env_port!r}") from None
    if port is not None and not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {port}")
    app_server_url = _app_server_url(flags)
    broker = _celery_broker(flags, root)
    return BackendOptions(
        host=flags["host"]
        or os.environ.get("CODEX_WORKSPACE_BACKEND_HOST")
        or DEFAULT_BACKEND_HOST,
        port=DEFAULT_BACKEND_PORT if port is None else port,
        cwd=root,
        data_dir=Path(data).resolve() if data else root / ".workspace" / "backend",
        token=_read_secret(
            flags["token_file"],
            "CODEX_WORKSPACE_BACKEND_TOKEN",
            "--token-file",
            "the bearer token clients must send",
        ),
        secret=_read_secret(
            flags["secret_file"],
            "CODEX_FLOW_BACKEND_SECRET",
            "--secret-file",
            "the secret POST /events bodies are signed with",
        ),
        allowed_origins=tuple(flags["allow_origin"]),
        public_hosts=_public_hosts(flags),
        concurrency=flags["concurrency"],
        env_allow=tuple(flags["env_allow"]),
        app_server_url=app_server_url,
        read_timeout=_read_timeout(READ_TIMEOUT),
        executor="local" if broker is None else "celery",
        broker=broker,
    )


def _celery_broker(flags: BackendFlags, root: Path) -> str | None:
    """The broker when steps go to Celery workers (None: they run here): ``--executor`` and
    ``--broker``, else workspace.toml's ``[workspace.executor]``."""
    from workspace_adapter.commands.worker import CELERY_MISSING, broker_for, configured_executor

    # A workspace.toml that cannot be read is the flow catalog's to report; steps run here.
    configured = configured_executor(root, unreadable_ok=True)
    kind = flags.get("executor") or (configured.kind if configured is not None else "local")
    if kind != "celery":
        return None
    broker = broker_for(flags.get("broker"), configured)
    try:
        import celery  # noqa: F401
    except ImportError:
        raise UserError(CELERY_MISSING) from None
    return broker


def _read_timeout(default: float) -> float:
    """Seconds from its variable when set (a number above 0), else ``default``."""
    given = os.environ.get(READ_TIMEOUT_ENV)
    if not given:
        return default
    try:
        seconds = float(given)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 86400:
        raise UserError(f"{READ_TIMEOUT_ENV} must be a number of seconds above 0, got {given!r}")
    return seconds


def _public_hosts(flags: BackendFlags) -> tuple[str, ...]:
    """``--public-host`` (repeated), else the comma-separated names of its variable."""
    given = flags.get("public_host") or os.environ.get(PUBLIC_HOST_ENV, "").split(",")
    names = tuple(name.strip() for name in given if name.strip())
    for name in names:
        if "/" in name or " " in name:
            raise UserError(f"--public-host {name!r}: give a host name such as backend.example")
    return names


def _app_server_url(flags: BackendFlags) -> str | None:
    """``--app-server-url``, then the two variables codex-flows reads, in its order."""
    if flags.get("local_app_server"):
        raise UserError(
            "--local-app-server is not supported: start `codex app-server --listen ws://…` "
            "yourself and pass --app-server-url"
        )
    url = (
        flags.get("app_server_url")
        or os.environ.get("CODEX_WORKSPACE_BACKEND_APP_SERVER_URL")
        or os.environ.get("CODEX_WORKSPACE_APP_SERVER_WS_URL")
        or None
    )
    if url is not None and not url.startswith(("ws://", "wss://")):
        raise UserError(f"--app-server-url must be a ws:// or wss:// URL, got {url!r}")
    return url


def backend(*, log_level: str, workspace_root: Path, **flags: Unpack[BackendFlags]) -> int:
    from workspace_adapter.backend.server import run_backend
    from workspace_adapter.base import logs

    logs.configure(log_level)
    return run_backend(backend_options(flags, default_cwd=workspace_root))
