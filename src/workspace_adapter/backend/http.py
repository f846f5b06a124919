"""The backend's HTTP routes (docs/api.md) and the guard in front of every request.

Routes translate between HTTP and :class:`BackendService`: a bad body or query is a 400 with a
JSON error naming the field, an unknown id a 404 in codex-flows' words (``{"error": "run not
found"}``), never a 500 for input. Replies have codex-flows' shapes (docs/api.md); any other
path that is no WebSocket upgrade gets codex-flows' 426.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from workspace_adapter import protocol as rpc
from workspace_adapter.backend.service import BackendService
from workspace_adapter.backend.transport import descriptors
from workspace_adapter.base.hosts import is_loopback
from workspace_adapter.events import MAX_FRAME_BYTES

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
EVENT_POSTS = frozenset({"/events", "/flow-events"})
INVALID_SIGNATURE = "invalid signature"
UPGRADE_REQUIRED = "workspace backend: WebSocket JSON-RPC on any path, HTTP routes in docs/api.md\n"
# A posted event is one FlowEvent: as large as a WebSocket frame may be, no larger.
MAX_BODY_BYTES = MAX_FRAME_BYTES


class BodyTooLarge(Exception):
    """A request body over :data:`MAX_BODY_BYTES`; answered 413 before it is all read."""


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refused (:class:`BodyTooLarge`) as soon as it grows past ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


async def read_body_or_refuse(request: Request, timeout: float) -> bytes | Response:
    """The body, or the reply refusing it: 413 when too large, 408 when it comes too slowly.

    Both close the connection: the rest of the body is never read.
    """
    try:
        with anyio.fail_after(timeout):
            return await read_body(request)
    except BodyTooLarge:
        refusal = error_response(413, f"body is larger than {MAX_BODY_BYTES} bytes")
    except TimeoutError:
        refusal = error_response(408, f"the body did not arrive within {timeout:g} s")
    refusal.headers["Connection"] = "close"
    return refusal


def json_response(body: Any, status: int = 200) -> Response:
    return Response(rpc.encode_json(body), status_code=status, media_type="application/json")


def error_response(
    status: int, message: str, field: str | None = None, retry_after: int | None = None
) -> Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    response = json_response(body, status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port: ``[::1]:3586`` is ``[::1]``."""
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """Refuses what the backend does not serve before any route or WebSocket sees it.

    In order: a ``Host`` that is no loopback name and none given with ``--public-host`` (a
    DNS-rebinding page reaches the daemon under its own name), a browser origin that is not
    allowed, and, with a token, an unauthenticated call. ``/healthz`` and ``/readyz`` are open
    to HTTP (a WebSocket upgrade on those paths is checked); ``POST /events`` with a secret
    configured is checked by its route instead (a valid signature stands in for the token).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        secret: str | None,
        allowed_origins: frozenset[str],
        public_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.token = token
        self.secret = secret
        self.allowed_origins = allowed_origins
        self.public_hosts = frozenset(name.lower() for name in public_hosts)

    def host_allowed(self, header: bytes | None) -> bool:
        """A loopback name or a public one, with or without a port; no header (HTTP/1.0) too."""
        if header is None:
            return True
        text = header.decode("latin-1").strip().lower()
        name = host_name(text)
        return is_loopback(name) or bool({text, name} & self.public_hosts)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = dict(scope.get("headers") or [])
        path = scope.get("path", "")
        open_path = scope["type"] == "http" and path in OPEN_PATHS
        host = headers.get(b"host")
        if not open_path and not self.host_allowed(host):
            shown = (host or b"").decode("latin-1")
            return 421, (
                f"host {shown!r} is not this backend's name; use 127.0.0.1 or localhost, "
                "or start the backend with --public-host NAME"
            )
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1") not in self.allowed_origins:
            return 403, "origin not allowed; start the backend with --allow-origin"
        if self.token is None or open_path:
            return None
        if self.secret is not None and path in EVENT_POSTS and scope.get("method") == "POST":
            return None
        authorization = headers.get(b"authorization")
        if not rpc.verify_token(
            self.token, authorization.decode("latin-1") if authorization else None
        ):
            return 401, "missing or wrong bearer token"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            refused = self.refusal(scope)
            if refused is not None:
                status, message = refused
                response = error_response(status, message)
                if scope["type"] == "websocket":
                    await WebSocket(scope, receive, send).send_denial_response(response)
                else:
                    await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


Handler = Callable[[Request], Awaitable[Response]]


def _faults_as_http(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except OSError as exc:
            short = descriptors.fault(exc)
            if short is None:
                raise
            return error_response(503, short.message, retry_after=1)
        except rpc.RpcFault as fault:
            data = fault.data or {}
            field = data.get("field")
            if fault.code == rpc.OVERLOADED:
                # Retryable: the run queue is full, or the store is locked or full.
                return error_response(503, fault.message, retry_after=data.get("retryAfter", 1))
            if fault.code == rpc.INVALID_PARAMS and "no such" in fault.message:
                thing = "run" if field == "runId" else "event"
                return error_response(404, f"{thing} not found")
            return error_response(400, fault.message, field)

    return wrapped


P = TypeVar("P", bound=msgspec.Struct)


def _query(request: Request, params_type: type[P], names: dict[str, str]) -> P:
    params = {key: request.query_params[q] for q, key in names.items() if q in request.query_params}
    return rpc.parse_params(params_type, params)


def build_routes(
    service: BackendService,
    *,
    secret: str | None,
    ready: Callable[[], bool],
    token: str | None = None,
    body_timeout: float = 10.0,
) -> list[Route]:
    """Every HTTP route of the backend over ``service``."""

    async def healthz(request: Request) -> Response:
        return json_response({"ok": True})

    async def readyz(request: Request) -> Response:
        # Ready means ready for flows; an app-server that is down is reported, not fatal.
        executor = service.queue.executor.status()
        # Runs wait queued while the executor cannot start them (its broker is down): say why.
        ok = ready() and executor.get("problem") is None
        body: dict[str, Any] = {"ok": ok}
        if executor.get("kind") != "local":  # the local executor has nothing to say
            body["executor"] = executor
        if service.app_server is not None:
            body["appServer"] = service.app_server.status()
        return json_response(body, 200 if ok else 503)

    def authorized(request: Request, body: bytes) -> bool:
        """With a secret: a valid signature under either header name, or else the token."""
        assert secret is not None
        for name in rpc.SIGNATURE_HEADERS:
            if rpc.verify_signature(secret, body, request.headers.get(name)):
                return True
        return token is not None and rpc.verify_token(token, request.headers.get("authorization"))

    async def post_event(request: Request) -> Response:
        body = await read_body_or_refuse(request, body_timeout)
        if isinstance(body, Response):
            return body
        if secret is not None and not authorized(request, body):
            return error_response(401, INVALID_SIGNATURE)
        try:
            event = rpc.decode_json(body)
        except msgspec.DecodeError as exc:
            return error_response(400, f"body is not valid JSON: {exc}")
        if not isinstance(event, dict):
            return error_response(400, "body must be one FlowEvent (a JSON object)")
        reply = await service.dispatch(event)
        return json_response(reply, 202)

    async def list_events(request: Request) -> Response:
        params = _query(
            request, rpc.ListEventsParams, {"type": "type", "limit": "limit", "cursor": "cursor"}
        )
        return json_response(await service.list_events(params.type, params.limit, params.cursor))

    async def get_event(request: Request) -> Response:
        return json_response(service.get_event(request.path_params["event_id"]))

    async def replay_event(request: Request) -> Response:
        body = await read_body_or_refuse(request, body_timeout)
        if isinstance(body, Response):
            return body
        if secret is not None and not authorized(request, body):
            return error_response(401, INVALID_SIGNATURE)
        wait = False
        if body.strip():  # optional: {"wait": true} waits for the runs, as in codex-flows
            try:
                options = rpc.decode_json(body)
            except msgspec.DecodeError as exc:
                return error_response(400, f"body is not valid JSON: {exc}")
            wait_given = options.get("wait", False) if isinstance(options, dict) else None
            if not isinstance(wait_given, bool):
                return error_response(400, 'body must be {"wait": true|false}', "wait")
            wait = wait_given
        reply = await service.replay(request.path_params["event_id"], wait=wait)
        return json_response(reply, 202)

    async def list_runs(request: Request) -> Response:
        params = _query(
            request,
            rpc.ListRunsParams,
            {
                "eventId": "eventId",
                "event_id": "eventId",
                "status": "status",
                "limit": "limit",
                "cursor": "cursor",
            },
        )
        page = await service.list_runs(params.eventId, params.status, params.limit, params.cursor)
        return json_response(page)

    async def get_run(request: Request) -> Response:
        # {"run": …}, as codex-flows answers here and as flow.getRun answers.
        return json_response(rpc.RunResult(service.get_run(request.path_params["run_id"])))

    async def upgrade_required(request: Request) -> Response:
        return Response(UPGRADE_REQUIRED, status_code=426, media_type="text/plain")

    async def cancel_run(request: Request) -> Response:
        return json_response(rpc.RunResult(await service.cancel_run(request.path_params["run_id"])))

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/runs", _faults_as_http(list_runs), methods=["GET"]),
        Route("/runs/{run_id:path}/cancel", _faults_as_http(cancel_run), methods=["POST"]),
        Route("/runs/{run_id:path}", _faults_as_http(get_run), methods=["GET"]),
    ]
    for base in ("/events", "/flow-events"):
        routes += [
            Route(base, _faults_as_http(post_event), methods=["POST"]),
            Route(base, _faults_as_http(list_events), methods=["GET"]),
            Route(
                f"{base}/{{event_id:path}}/replay", _faults_as_http(replay_event), methods=["POST"]
            ),
            Route(f"{base}/{{event_id:path}}", _faults_as_http(get_event), methods=["GET"]),
        ]
    # Last: what no route above takes fully. A known path with another method stays a 405.
    routes.append(Route("/{path:path}", upgrade_required, methods=["GET", "HEAD"]))
    return routes
