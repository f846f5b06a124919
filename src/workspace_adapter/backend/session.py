"""One WebSocket connection of the backend: its frames in, its replies and notifications out.

A :class:`ClientSession` reads requests, answers them concurrently through
:class:`~workspace_adapter.backend.service.BackendService`, and writes through a bounded outbox
(a client that stops reading is closed, never waited for). :class:`WebSocketsFirst` hands every
WebSocket upgrade to one, and every other request to the HTTP routes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from workspace_adapter import protocol as rpc
from workspace_adapter.backend.service import BackendService
from workspace_adapter.backend.subscriptions import Outbox
from workspace_adapter.backend.transport import MemoryReturn, descriptors
from workspace_adapter.base.logs import get_logger
from workspace_adapter.base.times import utc_now_iso

# Requests one connection may have in flight before it hears "overloaded".
MAX_INFLIGHT_PER_CONNECTION = 256
# How long a close frame may wait behind unread data before we give up on the client.
CLOSE_TIMEOUT = 30.0
# A reply this large leaves enough freed memory behind to be worth handing back.
LARGE_REPLY_BYTES = 1024 * 1024
SLOW_SUBSCRIBER = 1008


class ClientSession:
    """One WebSocket: reads requests, handles them concurrently, writes through an outbox."""

    def __init__(
        self,
        websocket: WebSocket,
        service: BackendService,
        receive: Receive,
        send: Send,
        memory: MemoryReturn,
    ) -> None:
        self.websocket = websocket
        self.memory = memory
        # Frames move through the server's own receive/send: starlette's WebSocket checks its
        # state on every call, which costs more than the frame's JSON (accept and close still
        # go through it).
        self._receive = receive
        self._send = send
        self.service = service
        self.outbox = Outbox(on_overflow=self._abandon_send)
        self.inflight = 0
        self._sending: anyio.CancelScope | None = None
        # Requests in flight: plain asyncio tasks (an anyio task group costs ~20 us more per
        # spawn, a tenth of a no-match dispatch). Only a request that waits for its runs gets a
        # cancel scope (another ~13 us), so closing the connection cancels it the anyio way
        # (the store writer's shield holds); the others end on their own, soon.
        self._requests: set[asyncio.Task[None]] = set()
        self._scopes: set[anyio.CancelScope] = set()
        # Requests writing their reply themselves; a client that stopped reading holds them.
        self._direct_sends: set[asyncio.Task[Any]] = set()
        self._closing = False
        # True while a frame is being handed to the server (by the writer or by a request).
        self._writing = False
        self._log = get_logger(component="ws")

    async def serve(self) -> None:
        self.outbox.put(rpc.connected_notification(utc_now_iso()))
        self.service.hub.attach(self.outbox)
        # The writer is a task of its own, stopped through its cancel scope, not a task
        # group's child: anyio's task group keeps a cancelled child's CancelledError in a
        # reference cycle with the whole session, so every closed connection stayed in memory
        # until the cyclic collector came by (an idle daemon's, rarely).
        reading = anyio.CancelScope()
        writer = asyncio.get_running_loop().create_task(self._write(reading))
        try:
            with reading:
                while True:
                    message = await self._receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    frame = message.get("text")
                    if frame is None:
                        frame = message.get("bytes") or b""
                    if self.inflight >= MAX_INFLIGHT_PER_CONNECTION:
                        self._refuse_overloaded(frame)
                        continue
                    self.inflight += 1
                    task = asyncio.get_running_loop().create_task(self._handle(frame))
                    self._requests.add(task)
                    task.add_done_callback(self._requests.discard)
        finally:
            self.service.hub.drop(self.outbox)
            await self._cancel_requests()  # closes the outbox: the writer's next frame is None
            await self._stop_writer(writer)
            self.memory.connection_closed()

    async def _stop_writer(self, writer: asyncio.Task[None]) -> None:
        if self._sending is not None:
            self._sending.cancel()  # a send waiting for a client that stopped reading
        with anyio.CancelScope(shield=True):
            await asyncio.wait([writer])
        self._sending = None
        self.outbox.on_overflow = None  # the outbox and the session no longer hold each other
        if not writer.cancelled() and writer.exception() is not None:
            self._log.error("ws.writer_failed", exc_info=writer.exception())

    async def _cancel_requests(self) -> None:
        """End the requests in flight and wait for them, as a task group's exit would."""
        self._closing = True
        # Replies have nowhere to go now; one waiting for room in the outbox gives up.
        self.outbox.close()
        for scope in self._scopes:
            scope.cancel()
        for task in self._direct_sends:
            task.cancel()  # waiting for the socket to drain, past every store write
        if self._requests:
            with anyio.CancelScope(shield=True):
                await asyncio.wait(self._requests)

    async def _write(self, scope: anyio.CancelScope) -> None:
        # One cancel scope for the whole loop, not one per frame: an overflow cancels a blocked
        # send or a wait for the next frame alike, and either way the loop is over.
        with anyio.CancelScope() as self._sending:
            while True:
                frame = await self.outbox.get()
                if frame is None:
                    break
                self._writing = True
                try:
                    await self._send({"type": "websocket.send", "text": frame.decode()})
                except (WebSocketDisconnect, RuntimeError, OSError):
                    break
                finally:
                    self._writing = False
        if self.outbox.overflowed:
            # The client stopped reading: its subscriptions go now, the close frame goes out
            # once the unread data drains (or never, if it never reads again).
            self.service.hub.drop(self.outbox)
            self._log.warning("ws.slow_subscriber_closed", limit=self.outbox.limit)
            with anyio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(Exception):
                await self.websocket.close(SLOW_SUBSCRIBER, "subscriber too slow")
        scope.cancel()

    async def _send_now(self, reply: bytes) -> None:
        """Write a reply straight away when nothing waits before it (the usual case).

        Skips the outbox and the writer task's wake-up. Frames keep their order: this runs
        only while the outbox is empty and nobody else is writing, and a send that finds the
        socket full waits for it ahead of the writer (the server wakes waiters in order).
        """
        self._writing = True
        task = asyncio.current_task()
        assert task is not None
        self._direct_sends.add(task)
        try:
            await self._send({"type": "websocket.send", "text": reply.decode()})
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the connection is gone: the reader notices and ends the session
        finally:
            self._direct_sends.discard(task)
            self._writing = False

    def _abandon_send(self) -> None:
        # A send blocked on a full socket is waiting for the transport to become writable; it
        # has written nothing yet, so cancelling it cannot cut a frame in half.
        if self._sending is not None:
            self._sending.cancel()

    def _refuse_overloaded(self, frame: str | bytes) -> None:
        try:
            request = rpc.decode_request(frame)
        except rpc.RpcFault as fault:
            if not fault.silent:
                self.outbox.put(rpc.encode_fault(fault))
            return
        if request is not None and not request.notification:
            busy = rpc.RpcFault(
                rpc.OVERLOADED, "overloaded: too many requests in flight", request_id=request.id
            )
            self.outbox.put(rpc.encode_fault(busy))

    async def _handle(self, frame: str | bytes) -> None:
        try:
            if self._closing:  # the connection closed before this request started
                return
            reply = await self._answer(frame)
            if reply is None:
                return
            if len(reply) > LARGE_REPLY_BYTES:
                self.memory.large_reply_sent()
            if self._writing or self.outbox.size or self.outbox.closed:
                await self.outbox.put_reply(reply)
            else:
                await self._send_now(reply)
        except Exception:
            self._log.exception("rpc.handler_failed")
        finally:
            self.inflight -= 1

    async def _answer(self, frame: str | bytes) -> bytes | None:
        """The encoded reply to one frame; None for a notification, a client's reply, or a
        request cancelled because the connection closed."""
        request_id: rpc.RequestId = None
        notification = False
        try:
            request = rpc.decode_request(frame)
            if request is None:
                return None
            request_id, notification = request.id, request.notification
            if request.params.get("wait") is True:
                with anyio.CancelScope() as scope:
                    self._scopes.add(scope)
                    try:
                        result = await self.service.call(
                            request.method, request.params, self.outbox
                        )
                    finally:
                        self._scopes.discard(scope)
                if scope.cancel_called:
                    return None
            else:
                result = await self.service.call(request.method, request.params, self.outbox)
            return None if request.notification else rpc.encode_result(request.id, result)
        except rpc.RpcFault as fault:
            if fault.silent or notification:
                # A notification is never answered, whatever went wrong (JSON-RPC 2.0, 4.1).
                self._log.info("rpc.notification_refused", code=fault.code, problem=fault.message)
                return None
            if fault.request_id is None:
                fault.request_id = request_id
            return rpc.encode_fault(fault)
        except Exception as exc:
            problem = descriptors.fault(exc)  # out of file descriptors: retryable, logged apart
            if problem is None:
                self._log.exception("rpc.internal_error", request_id=request_id)
                problem = rpc.RpcFault(rpc.INTERNAL_ERROR, "internal error")
            if notification:
                return None
            problem.request_id = request_id
            return rpc.encode_fault(problem)


class WebSocketsFirst:
    """A WebSocket on every path goes straight to a :class:`ClientSession`; HTTP to starlette.

    Skipping starlette's router and middleware for the upgrade keeps them off every frame's
    path too (their wrapped ``send`` is called once per reply).
    """

    def __init__(self, http: ASGIApp, service: BackendService, memory: MemoryReturn) -> None:
        self.http = http
        self.service = service
        self.memory = memory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.http(scope, receive, send)
            return
        websocket = WebSocket(scope, receive, send)
        try:
            await websocket.accept()
        except (WebSocketDisconnect, OSError):
            return
        await ClientSession(websocket, self.service, receive, send, self.memory).serve()
