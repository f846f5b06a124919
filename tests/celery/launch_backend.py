"""Temporary: a backend with the Celery executor until `workspace backend --executor` lands."""

import sys

from workspace_adapter.backend.server import run_daemon, serve_backend
from workspace_adapter.base import logs
from workspace_adapter.cli import build_parser
from workspace_adapter.cluster.executor import CeleryExecutor
from workspace_adapter.commands.backend import backend_options

argv = sys.argv[1:]
ns = build_parser("backend").parse_args(argv)
flags = {
    k: getattr(ns, k)
    for k in (
        "host",
        "port",
        "cwd",
        "data_dir",
        "token_file",
        "secret_file",
        "allow_origin",
        "concurrency",
        "env_allow",
        "app_server_url",
        "local_app_server",
    )
}
logs.configure("info")
options = backend_options(flags)  # type: ignore[arg-type]


async def main() -> int:
    return await serve_backend(options, CeleryExecutor(ns.broker))


sys.exit(run_daemon(main))
