"""ttrpc server: services registered as data, decoded or raw handlers, unix/TCP/TLS listeners.

Behaviour follows containerd's Go server where the Kata shim or kata-agent can tell:
- success responses carry no status; errors carry ``google.rpc.Status``;
- unknown service/method -> UNIMPLEMENTED, undecodable request -> INVALID_ARGUMENT;
- an oversized inbound frame gets RESOURCE_EXHAUSTED on its stream, the connection stays;
- any odd stream id is accepted (the Rust client does not send them in order);
- ``timeout_nano`` becomes the handler's deadline;
- a handler is cancelled when its connection closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from protocols.ttrpc.connection import FrameProtocol
from protocols.ttrpc.framing import (
    MESSAGE_LENGTH_MAX,
    Flags,
    Frame,
    MessageType,
    OversizedFrame,
    encode_frame,
)
from protocols.ttrpc.listeners import Listeners
from protocols.ttrpc.messages import (
    DecodeError,
    Request,
    Response,
    Status,
    decode_request,
    encode_response,
)
from protocols.ttrpc.status import Code, OversizedMessage, TTRPCError

log = logging.getLogger(__name__)

# Calls in flight on one connection before the server stops reading more requests from it.
MAX_CALLS_IN_FLIGHT = 1024


class Message(Protocol):
    """The part of a generated protobuf message class the server uses."""

    def SerializeToString(self, **kwargs: Any) -> bytes: ...

    def ParseFromString(self, data: bytes, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class CallContext:
    service: str
    method: str
    metadata: tuple[tuple[str, str], ...]
    deadline: float | None  # event-loop time, None without a deadline
    timeout_nano: int

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), ``None`` without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def remaining_nano(self) -> int:
        """What to send as ``timeout_nano`` when passing this call on: 0 without a deadline."""
        remaining = self.remaining()
        if remaining is None:
            return 0
        return max(1, int(remaining * 1e9))

    def metadata_value(self, key: str) -> str | None:
        lowered = key.lower()
        for name, value in self.metadata:
            if name.lower() == lowered:
                return value
        return None


RawHandler = Callable[[CallContext, bytes], Awaitable[bytes]]
Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True, slots=True)
class Method(Generic[Req, Resp]):
    """A decoded handler: ``async def handler(request, ctx) -> response``."""

    handler: Callable[[Req, CallContext], Awaitable[Resp]]
    request_type: type[Req]
    response_type: type[Resp]

    async def __call__(self, ctx: CallContext, payload: bytes) -> bytes:
        request = self.request_type()
        try:
            request.ParseFromString(payload)
        except Exception as exc:  # protobuf raises DecodeError, and others on odd input
            raise TTRPCError(
                Code.INVALID_ARGUMENT, f"ttrpc: error unmarshalling payload: {exc}"
            ) from exc
        response = await self.handler(request, ctx)
        if response is None:
            raise TTRPCError(Code.UNKNOWN, "ttrpc: marshal called with nil")
        return response.SerializeToString()


class Server(Listeners):
    """Holds the service table and any number of listeners sharing it."""

    def __init__(
        self, *, max_message: int = MESSAGE_LENGTH_MAX, max_calls: int = MAX_CALLS_IN_FLIGHT
    ) -> None:
        super().__init__()
        self._max_message = max_message
        self._max_calls = max_calls
        self._methods: dict[str, RawHandler] = {}
        self._services: dict[str, RawHandler] = {}
        self._known_services: set[str] = set()
        self._connections: set[_ServerConnection] = set()
        self._closing = False

    # registration -----------------------------------------------------------------------
    def register(self, full_method: str, method: Method[Any, Any] | RawHandler) -> None:
        """Register ``"pkg.Service/Method"`` with a decoded :class:`Method` or a raw handler."""
        service, sep, name = full_method.partition("/")
        if not sep or not service or not name:
            raise ValueError(f"expected 'pkg.Service/Method', got {full_method!r}")
        self._methods[full_method] = method
        self._known_services.add(service)

    def register_service(self, service: str, methods: Mapping[str, Method[Any, Any]]) -> None:
        for name, method in methods.items():
            self.register(f"{service}/{name}", method)

    def register_raw(self, name: str, handler: RawHandler) -> None:
        """A raw handler for one method (``svc/Method``) or every method of a service."""
        if "/" in name:
            self.register(name, handler)
        else:
            self._services[name] = handler
            self._known_services.add(name)

    def lookup(self, service: str, method: str) -> RawHandler:
        handler = self._methods.get(f"{service}/{method}") or self._services.get(service)
        if handler is not None:
            return handler
        if service in self._known_services:
            raise TTRPCError(Code.UNIMPLEMENTED, f"method {method}")
        raise TTRPCError(Code.UNIMPLEMENTED, f"service {service}")

    def _new_connection(self) -> _ServerConnection:
        return _ServerConnection(self)

    @property
    def active_calls(self) -> int:
        return sum(len(conn.calls) for conn in self._connections)

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop accepting, let calls in flight finish for ``grace`` seconds, then cancel them."""
        self._closing = True
        await self._stop_listening()
        calls = [task for conn in self._connections for task in conn.calls.values()]
        if calls and grace > 0:
            await asyncio.wait(calls, timeout=grace)
        for conn in list(self._connections):
            conn.abort_calls()
            conn.close()
        remaining = [task for conn in self._connections for task in conn.calls.values()]
        if remaining:
            await asyncio.wait(remaining, timeout=1.0)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown(grace=0)


class _ServerConnection(FrameProtocol):
    """Backpressure: reading stops while ``max_calls`` calls are in flight, or while the
    peer does not read its responses (the write buffer is above its high-water mark)."""

    def __init__(self, server: Server) -> None:
        super().__init__(server._max_message)
        self.server = server
        self.calls: dict[int, asyncio.Task[None]] = {}
        self._too_many_calls = False
        self._writes_blocked = False
        self._reading = True
        self._backlog: deque[Frame | OversizedFrame] = deque()  # read while paused

    def _update_reading(self) -> None:
        want = not (self._too_many_calls or self._writes_blocked)
        transport = self.transport
        if want == self._reading or transport is None or transport.is_closing():
            return
        self._reading = want
        if not want:
            transport.pause_reading()
            return
        backlog = self._backlog
        while backlog and self._reading:
            self._handle_frame(backlog.popleft())
        if self._reading:
            transport.resume_reading()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._writes_blocked = True
        self._update_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._writes_blocked = False
        self._update_reading()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.server._closing:
            self.close()
            return
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.server._connections.discard(self)
        self.abort_calls()

    def abort_calls(self) -> None:
        for task in self.calls.values():
            task.cancel()

    def frame_received(self, frame: Frame | OversizedFrame) -> None:
        if self._reading and not self._backlog:
            self._handle_frame(frame)
        else:  # the rest of a read that came in before reading paused
            self._backlog.append(frame)

    def _handle_frame(self, frame: Frame | OversizedFrame) -> None:
        if isinstance(frame, OversizedFrame):
            if frame.type == MessageType.REQUEST:
                error = OversizedMessage(frame.length, self.server._max_message)
                self._send_status(frame.stream_id, Status(error.code, error.message))
            return
        if frame.type == MessageType.REQUEST:
            self._request_received(frame)
        elif frame.type == MessageType.DATA:
            self._send_status(
                frame.stream_id, Status(Code.INVALID_ARGUMENT, "StreamID is no longer active")
            )
        # Responses and unknown types are ignored, as the Go server does.

    def _request_received(self, frame: Frame) -> None:
        stream_id = frame.stream_id
        if stream_id % 2 == 0:
            self._send_status(
                stream_id,
                Status(Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams"),
            )
            return
        if stream_id in self.calls:
            self._send_status(
                stream_id, Status(Code.INVALID_ARGUMENT, "StreamID cannot be re-used")
            )
            return
        if frame.flags & Flags.REMOTE_OPEN:
            self._send_status(
                stream_id, Status(Code.UNIMPLEMENTED, "streaming requests are not supported")
            )
            return
        try:
            request = decode_request(frame.data)
        except DecodeError as exc:
            self._send_status(
                stream_id, Status(Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}")
            )
            return
        task = asyncio.get_running_loop().create_task(self._serve(stream_id, request))
        self.calls[stream_id] = task
        task.add_done_callback(partial(self._call_done, stream_id))
        if len(self.calls) >= self.server._max_calls:
            self._too_many_calls = True
            self._update_reading()

    def _call_done(self, stream_id: int, _task: asyncio.Task[None]) -> None:
        self.calls.pop(stream_id, None)
        if self._too_many_calls and len(self.calls) < self.server._max_calls:
            self._too_many_calls = False
            self._update_reading()

    async def _serve(self, stream_id: int, request: Request) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout_nano / 1e9 if request.timeout_nano > 0 else None
        ctx = CallContext(
            request.service, request.method, request.metadata, deadline, request.timeout_nano
        )
        scope: asyncio.Timeout | None = None
        try:
            handler = self.server.lookup(request.service, request.method)
            if deadline is None:
                payload = await handler(ctx, request.payload)
            else:
                scope = asyncio.timeout_at(deadline)
                async with scope:
                    payload = await handler(ctx, request.payload)
            response = Response(None, payload)
        except TTRPCError as exc:
            response = Response(Status(exc.code, exc.message, exc.details))
        except TimeoutError:
            if scope is not None and scope.expired():  # (uvloop may fire a hair early)
                response = Response(Status(Code.DEADLINE_EXCEEDED, "context deadline exceeded"))
            else:  # the handler's own timeout, not the caller's deadline
                response = Response(Status(Code.UNKNOWN, "timeout"))
        except asyncio.CancelledError:
            if self.is_open:  # the server is shutting down; the client is still there
                self._send_status(stream_id, Status(Code.CANCELLED, "context canceled"))
            raise
        except Exception as exc:
            log.warning(
                "ttrpc %s/%s: handler failed: %s", request.service, request.method, exc,
                exc_info=exc,
            )
            response = Response(Status(Code.UNKNOWN, str(exc) or type(exc).__name__))
        while self._can_write is not None and not self._lost:
            await self.drain()  # answers wait while the peer does not read, not the buffer
        self._send(stream_id, response)

    def _send_status(self, stream_id: int, status: Status) -> None:
        self._send(stream_id, Response(status))

    def _send(self, stream_id: int, response: Response) -> None:
        data = encode_response(response)
        try:
            frame = encode_frame(stream_id, MessageType.RESPONSE, data)
        except OversizedMessage as exc:
            frame = encode_frame(
                stream_id,
                MessageType.RESPONSE,
                encode_response(Response(Status(exc.code, exc.message))),
            )
        self.write(frame)
