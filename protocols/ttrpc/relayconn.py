"""One relayed downstream connection: requests checked and passed on, answers matched.

See :mod:`protocols.ttrpc.relay` for what the relay answers itself and how it pushes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from protocols.ttrpc.deadlines import Deadlines
from protocols.ttrpc.framing import HEADER_LENGTH, Flags, MessageType
from protocols.ttrpc.messages import (
    DecodeError,
    Request,
    Response,
    Status,
    decode_request,
    encode_request,
    encode_response,
    scan_request,
    scan_status,
)
from protocols.ttrpc.relayio import (
    HEADER,
    PEER_WRITES,
    TOO_MANY_CALLS,
    Call,
    FrameReader,
    Upstream,
    shift_ids,
)
from protocols.ttrpc.server import CallContext
from protocols.ttrpc.status import Code, OversizedMessage, TTRPCError

if TYPE_CHECKING:
    from protocols.ttrpc.relay import Hook, RelayServer

log = logging.getLogger("protocols.ttrpc.relay")


class RelayConnection(FrameReader):
    """One downstream connection and the upstream connection it owns."""

    def __init__(self, server: RelayServer) -> None:
        super().__init__()
        self.server = server
        self.policy = server.policy
        self.calls: dict[int, Call] = {}
        self.up: Upstream | None = None
        self.connects = 0  # upstream connections made so far
        # A connection another downstream connection used before goes on with higher stream
        # ids (Go servers want them to increase): ids are shifted by ``offset`` on it.
        self.offset = 0
        self._top = 0  # the highest stream id this side sent
        self._queue: list[bytes] = []  # requests waiting for the upstream connection
        self._dialing: asyncio.Task[None] | None = None
        self._deadline: float | None = None  # of the latest request, bounds a dial
        self._held: list[bytes] = []  # own answers held while a large answer passes
        self._mid_frame = False
        self._skip = 0
        self._hooked: tuple[int, Call, Hook, bytes, float | None] | None = None
        self._loop = asyncio.get_running_loop()
        self._deadlines: Deadlines[int, Call] = Deadlines(self.calls, self._expire)

    # transport events ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (2, 10):  # AF_INET, AF_INET6
            sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY
        if self.server.closing:
            self.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        idle = not self.calls
        self._deadlines.close()
        for call in self.calls.values():
            self._release(call)
        self.calls.clear()
        self._queue.clear()
        if self._dialing is not None:
            self._dialing.cancel()
        up, self.up = self.up, None
        if up is None:
            return
        up.top_id = max(up.top_id, self.offset + self._top)
        if self.server.on_idle is None or not idle or up.through or not up.is_open:
            up.close()
        else:
            up.attach(None)
            up.resume(PEER_WRITES)
            self.server.on_idle(up)

    def pause_writing(self) -> None:
        self._write_blocked = True
        if self.up is not None:
            self.up.pause(PEER_WRITES)

    def resume_writing(self) -> None:
        self._write_blocked = False
        if self.up is not None:
            self.up.resume(PEER_WRITES)

    # requests -----------------------------------------------------------------------------
    def _frames(self, data: memoryview) -> int:
        end = len(data)
        pos = run = 0
        if self._skip:
            pos = run = min(end, self._skip)
            self._skip -= pos
        limit = self.policy.max_message
        while end - pos >= HEADER_LENGTH and not self._paused_by & TOO_MANY_CALLS:
            length, stream_id, type_, flags = HEADER.unpack_from(data, pos)
            stop = pos + HEADER_LENGTH + length
            if length > limit:
                if type_ == MessageType.REQUEST:
                    error = OversizedMessage(length, limit)
                    self.send_status(stream_id, error.code, error.message)
                self._flush(data, run, pos)
                pos = run = min(stop, end)
                self._skip = stop - pos
                continue
            if stop > end:
                break
            if type_ == MessageType.REQUEST and not flags and stream_id & 1 and (
                    stream_id not in self.calls):
                if self._request(data, pos, stop, stream_id):
                    pos = stop  # plain: joins the frames passed on in one write
                    continue
                self._flush(data, run, pos)  # the frames before it go first
                self._run_hook()
            else:
                self._flush(data, run, pos)
                self._refuse(stream_id, type_, flags, data, pos, stop)
            pos = run = stop
        self._flush(data, run, pos)
        return pos

    def _flush(self, data: memoryview, start: int, stop: int) -> None:
        if start < stop:
            self.send_up(bytes(data[start:stop]))

    def _request(self, data: memoryview, pos: int, stop: int, stream_id: int) -> bool:
        """Start a call; True when its frame is passed on as it is."""
        policy = self.policy
        try:
            service, method, timeout_nano = scan_request(data[pos + HEADER_LENGTH : stop])
        except DecodeError as exc:
            self.send_status(stream_id, Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}")
            return False
        if service not in policy.services:
            self.send_status(stream_id, Code.UNIMPLEMENTED, f"service {service}")
            return False
        call = Call(method)
        self.calls[stream_id] = call
        if stream_id > self._top:
            self._top = stream_id
        deadline = None
        if timeout_nano > 0:
            deadline = self._loop.time() + timeout_nano / 1e9
            self._deadlines.add(stream_id, call, deadline)
        self._deadline = deadline
        if len(self.calls) >= policy.max_calls:
            self.pause(TOO_MANY_CALLS)
        if policy.account is not None:
            policy.account("to_agent", stop - pos - HEADER_LENGTH, 0)
        if method in policy.observed and policy.observe is not None:
            policy.observe(method)
        hook = policy.hooks.get(method)
        if hook is None:
            return True
        call.watched = True
        self._hooked = (stream_id, call, hook, bytes(data[pos:stop]), deadline)
        return False

    def _run_hook(self) -> None:
        job, self._hooked = self._hooked, None
        if job is not None:
            self._hook(*job)

    def _refuse(self, stream_id: int, type_: int, flags: int, data: memoryview, pos: int,
                stop: int) -> None:
        """What the ttrpc server answers to a frame that does not start a plain call."""
        if type_ == MessageType.REQUEST:
            if not stream_id & 1:
                message = "StreamID must be odd for client initiated streams"
                self.send_status(stream_id, Code.INVALID_ARGUMENT, message)
            elif stream_id in self.calls:
                self.send_status(stream_id, Code.INVALID_ARGUMENT, "StreamID cannot be re-used")
            elif flags & Flags.REMOTE_OPEN:
                message = "streaming requests are not supported"
                self.send_status(stream_id, Code.UNIMPLEMENTED, message)
            else:  # other flags: a unary call all the same, passed on with flags 0
                header = HEADER.pack(stop - pos - HEADER_LENGTH, stream_id, type_, 0)
                frame = header + bytes(data[pos + HEADER_LENGTH : stop])
                if self._request(memoryview(frame), 0, len(frame), stream_id):
                    self.send_up(frame)
                self._run_hook()
        elif type_ == MessageType.DATA:
            self.send_status(stream_id, Code.INVALID_ARGUMENT, "StreamID is no longer active")
        # Responses and unknown types are ignored, as the Go server does.

    # hooks --------------------------------------------------------------------------------
    def _hook(self, stream_id: int, call: Call, hook: Hook, frame: bytes,
              deadline: float | None) -> None:
        try:
            request = decode_request(frame[HEADER_LENGTH:])
            ctx = CallContext(request.service, request.method, request.metadata, deadline,
                              request.timeout_nano)
            result = hook(ctx, request.payload)
        except TTRPCError as exc:
            self.fail(stream_id, call, exc.code, exc.message, exc.details)
            return
        if isinstance(result, bytes):
            self._send_hooked(request, ctx, result, frame, stream_id, call)
            return
        call.task = self._loop.create_task(
            self._await_hook(stream_id, call, request, ctx, result, frame))

    async def _await_hook(self, stream_id: int, call: Call, request: Request,
                          ctx: CallContext, result: Awaitable[bytes], frame: bytes) -> None:
        try:
            payload = await result
        except TTRPCError as exc:
            self.fail(stream_id, call, exc.code, exc.message, exc.details)
        except Exception as exc:
            log.warning("ttrpc %s/%s: handler failed: %s", request.service, request.method,
                        exc, exc_info=exc)
            self.fail(stream_id, call, Code.UNKNOWN, str(exc) or type(exc).__name__)
        else:
            call.task = None
            self._send_hooked(request, ctx, payload, frame, stream_id, call)

    def _send_hooked(self, request: Request, ctx: CallContext, payload: bytes, frame: bytes,
                     stream_id: int, call: Call) -> None:
        if self.calls.get(stream_id) is not call:
            return  # answered meanwhile (deadline)
        if payload != request.payload:
            data = encode_request(Request(request.service, request.method, payload,
                                          ctx.remaining_nano(), request.metadata))
            if len(data) > self.policy.max_message:
                error = OversizedMessage(len(data), self.policy.max_message)
                self.fail(stream_id, call, error.code, error.message)
                return
            frame = HEADER.pack(len(data), stream_id, MessageType.REQUEST, 0) + data
        self.send_up(frame)

    # answers ------------------------------------------------------------------------------
    def _release(self, call: Call) -> None:
        task = call.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def finish(self, call: Call) -> None:
        """``call`` (already taken out of :attr:`calls`) is over."""
        self._release(call)
        drained = self.server.drained
        if drained is not None and not self.server.active_calls:
            drained.set()
        if self._paused_by & TOO_MANY_CALLS and len(self.calls) < self.policy.max_calls:
            self.resume(TOO_MANY_CALLS)

    def fail(self, stream_id: int, call: Call, code: int, message: str,
             details: tuple[bytes, ...] = (), *, label: int | None = None) -> None:
        if self.calls.get(stream_id) is not call:
            return
        del self.calls[stream_id]
        self.finish(call)
        if self.policy.account is not None:
            self.policy.account("local", 0, code if label is None else label)
        self.send_status(stream_id, code, message, details)

    def _expire(self, stream_id: int, call: Call) -> None:
        self.fail(stream_id, call, Code.DEADLINE_EXCEEDED, "context deadline exceeded")

    def answered(self, call: Call, head: memoryview, length: int) -> None:
        policy = self.policy
        code, message = scan_status(head)
        if policy.account is not None:
            policy.account("from_agent", length, code)
        if code and call.watched and policy.on_error is not None:
            policy.on_error(call.method, code, message)

    def send_status(self, stream_id: int, code: int, message: str,
                    details: tuple[bytes, ...] = ()) -> None:
        data = encode_response(Response(Status(code, message, details)))
        frame = HEADER.pack(len(data), stream_id, MessageType.RESPONSE, 0) + data
        if self._mid_frame:
            self._held.append(frame)
        else:
            self.write(frame)

    def pass_back(self, frames: memoryview) -> None:
        """Frames from upstream, as they came (their stream ids shifted back if need be)."""
        self.write(shift_ids(frames, -self.offset) if self.offset else bytes(frames))

    def frame_started(self) -> None:
        self._mid_frame = True

    def frame_done(self) -> None:
        self._mid_frame = False
        held, self._held = self._held, []
        for frame in held:
            self.write(frame)

    # upstream -----------------------------------------------------------------------------
    def send_up(self, frame: bytes) -> None:
        up = self.up
        if up is not None and up.is_open:
            up.write(shift_ids(frame, self.offset) if self.offset else frame)
            return
        self._queue.append(frame)
        if self._dialing is None and not self.lost:
            self._dialing = self._loop.create_task(self._dial(self._deadline))

    async def _dial(self, deadline: float | None) -> None:
        try:
            up = await self.policy.connect(self, deadline)
        except TTRPCError as exc:
            self._dialing = None
            self._queue.clear()
            self._fail_waiting(exc.code, exc.message)
            return
        self._dialing = None
        if self.lost:
            up.close()
            return
        self.connects += 1
        up.attach(self)
        self.offset = up.top_id + 1 if up.top_id else 0
        self._top = 0
        self.up = up
        if self._write_blocked:
            up.pause(PEER_WRITES)
        queue, self._queue = self._queue, []
        if queue:
            self.send_up(b"".join(queue))

    def _fail_waiting(self, code: int, message: str, label: int | None = None) -> int:
        """Answer every call that is not in a hook (so waits on the upstream connection)."""
        waiting = [(sid, call) for sid, call in self.calls.items() if call.task is None]
        for stream_id, call in waiting:
            self.fail(stream_id, call, code, message, label=label)
        return len(waiting)

    def upstream_lost(self, up: Upstream, exc: Exception | None) -> None:
        if up is not self.up:
            return
        self.up = None
        if self.lost:
            return
        if up.through:  # half an answer went out: the stream cannot be resynchronised
            log.warning("ttrpc relay: upstream closed in the middle of an answer; closing the "
                        "downstream connection too")
            self.close()
            return
        count = self._fail_waiting(Code.UNAVAILABLE, self.policy.lost, -1)
        if count and self.policy.on_lost is not None:
            self.policy.on_lost(count, str(exc) if exc else "ttrpc: closed")

    def resume(self, reason: int) -> None:
        super().resume(reason)
        if reason == TOO_MANY_CALLS and self._partial and not self._paused_by & reason:
            self._loop.call_soon(self._read_held)

    def _read_held(self) -> None:
        """Requests read before the cap was hit, started now there is room."""
        if self.lost or self._paused_by & TOO_MANY_CALLS or not self._partial:
            return
        data = memoryview(self._partial)
        used = self._frames(data)
        data.release()
        del self._partial[:used]

    def cancel_all(self) -> None:
        for stream_id, call in list(self.calls.items()):
            self.fail(stream_id, call, Code.CANCELLED, "context canceled")
