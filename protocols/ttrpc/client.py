"""ttrpc client: many calls in flight on one connection, matched by stream id.

Stream ids are odd and strictly increasing on the wire (1, 3, 5, ...): the id is taken and
the Request written in one step on the event loop, so no other call can come in between.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
from collections.abc import Sequence
from typing import Any, TypeVar

from protocols.ttrpc.connection import FrameProtocol
from protocols.ttrpc.framing import (
    MESSAGE_LENGTH_MAX,
    Frame,
    MessageType,
    OversizedFrame,
    encode_frame,
)
from protocols.ttrpc.messages import DecodeError, Request, Response, decode_response, encode_request
from protocols.ttrpc.server import CallContext, Message
from protocols.ttrpc.status import Code, ConnectionClosed, OversizedMessage, TTRPCError

M = TypeVar("M", bound=Message)

_MAX_STREAM_ID = (1 << 32) - 1


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TTRPCError(Code.DEADLINE_EXCEEDED, "context deadline exceeded"))


class _ClientConnection(FrameProtocol):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.closed = asyncio.get_running_loop().create_future()

    def frame_received(self, frame: Frame | OversizedFrame) -> None:
        if frame.type != MessageType.RESPONSE:
            return  # no streaming calls are made, so Data frames have no reader
        waiter = self.pending.get(frame.stream_id)
        if waiter is None or waiter.done():
            return  # the call gave up (deadline) before its answer came
        if isinstance(frame, OversizedFrame):
            waiter.set_exception(OversizedMessage(frame.length, MESSAGE_LENGTH_MAX))
            return
        try:
            waiter.set_result(decode_response(frame.data))
        except DecodeError as exc:
            waiter.set_exception(
                TTRPCError(Code.INTERNAL, f"ttrpc: error unmarshalling response: {exc}")
            )

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for waiter in self.pending.values():
            if not waiter.done():
                waiter.set_exception(ConnectionClosed())
        if not self.closed.done():
            self.closed.set_result(None)


class Client:
    """One ttrpc connection. Create with :meth:`connect_unix` or :meth:`connect_tcp`."""

    def __init__(self, connection: _ClientConnection) -> None:
        self._conn = connection
        self._next_id = 1

    # connecting -------------------------------------------------------------------------
    @classmethod
    async def connect_unix(cls, path: str, *, limit: int = MESSAGE_LENGTH_MAX) -> Client:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_unix_connection(lambda: _ClientConnection(limit), path)
        return cls(conn)

    @classmethod
    async def connect_tcp(
        cls,
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        limit: int = MESSAGE_LENGTH_MAX,
    ) -> Client:
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {}
        if ssl is not None:
            kwargs["ssl"] = ssl
            kwargs["server_hostname"] = server_hostname if server_hostname is not None else host
        _, conn = await loop.create_connection(
            lambda: _ClientConnection(limit), host, port, **kwargs
        )
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(conn)

    @classmethod
    async def connect_socket(
        cls, sock: socket.socket, *, limit: int = MESSAGE_LENGTH_MAX
    ) -> Client:
        """Use an already-connected stream socket (for in-memory pairs)."""
        loop = asyncio.get_running_loop()
        if sock.family == socket.AF_UNIX:
            _, conn = await loop.create_unix_connection(lambda: _ClientConnection(limit), sock=sock)
        else:
            _, conn = await loop.create_connection(lambda: _ClientConnection(limit), sock=sock)
        return cls(conn)

    # calls ------------------------------------------------------------------------------
    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> M:
        payload = await self.call_raw(
            service, method, request.SerializeToString(), timeout=timeout, metadata=metadata
        )
        response = response_type()
        try:
            response.ParseFromString(payload)
        except Exception as exc:
            raise TTRPCError(
                Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}"
            ) from exc
        return response

    async def call_raw(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout: float | None = None,
        timeout_nano: int | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """Send one unary call with an undecoded payload; return the response payload.

        ``timeout`` (seconds) or ``timeout_nano`` sets both the deadline sent to the server
        and the local wait; neither means no deadline.
        """
        if timeout is not None:
            timeout_nano = max(1, int(timeout * 1e9))
        elif timeout_nano:
            timeout = timeout_nano / 1e9
        conn = self._conn
        if not conn.is_open:
            raise ConnectionClosed()
        data = encode_request(
            Request(service, method, payload, timeout_nano or 0, tuple(metadata))
        )
        stream_id = self._next_id
        if stream_id > _MAX_STREAM_ID:
            raise ConnectionClosed("ttrpc: stream ids exhausted on this connection")
        frame = encode_frame(stream_id, MessageType.REQUEST, data)  # raises OversizedMessage
        self._next_id = stream_id + 2
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        conn.pending[stream_id] = waiter
        try:
            conn.write(frame)
            await conn.drain()
            if timeout is None:
                response = await waiter
            else:
                timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter)
                try:
                    response = await waiter
                finally:
                    timer.cancel()
        finally:
            del conn.pending[stream_id]
        status = response.status
        if status is not None and status.code != Code.OK:
            raise TTRPCError(status.code, status.message, status.details)
        return response.payload

    async def forward(self, ctx: CallContext, payload: bytes) -> bytes:
        """Pass on a call a server received, undecoded: same service and method, the time
        left of its deadline, its metadata. Status errors come back unchanged."""
        return await self.call_raw(
            ctx.service,
            ctx.method,
            payload,
            timeout_nano=ctx.remaining_nano(),
            metadata=ctx.metadata,
        )

    # lifecycle --------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return not self._conn.is_open

    @property
    def in_flight(self) -> int:
        return len(self._conn.pending)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._conn.closed)

    async def aclose(self) -> None:
        self._conn.close()
        await self.wait_closed()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
