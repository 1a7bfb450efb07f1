"""The byte side of the frame relay: reading frames, and the upstream connection.

Both ends of a relayed connection read into one shared buffer and keep only the tail of a
frame that has not fully arrived. Answers from upstream go back as they came, cut through
(passed on while they arrive) when they are large.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from typing import TYPE_CHECKING, cast

from protocols.ttrpc.framing import HEADER_LENGTH, MessageType
from protocols.ttrpc.status import OversizedMessage

if TYPE_CHECKING:
    from protocols.ttrpc.relayconn import RelayConnection

HEADER = struct.Struct(">IIBB")
ID = struct.Struct(">II")
_READ_SIZE = 256 * 1024
WRITE_HIGH_WATER = 4 << 20  # bytes a transport may buffer before the other side pauses
CUT_THROUGH = 64 * 1024  # larger responses are passed on while they arrive
PEER_WRITES = 1  # reasons a side stops reading: the other side's buffer is full,
TOO_MANY_CALLS = 2  # the calls cap is reached


class Call:
    __slots__ = ("method", "task", "watched")

    def __init__(self, method: str) -> None:
        self.method = method
        self.task: asyncio.Task[None] | None = None
        self.watched = False


def shift_ids(frames: bytes | memoryview, delta: int) -> bytes:
    """``frames`` (starting at a header) with ``delta`` added to every stream id."""
    out = bytearray(frames)
    pos, end = 0, len(out)
    while end - pos >= HEADER_LENGTH:
        length, stream_id = ID.unpack_from(out, pos)
        ID.pack_into(out, pos, length, stream_id + delta)
        pos += HEADER_LENGTH + length
    return bytes(out)


_buffers = threading.local()


def _read_buffer() -> memoryview:
    """The read buffer of this thread's connections. One is enough: a read is handled (and
    what is left of it copied) before the next read of any connection starts, and a hop
    with a hundred idle connections does not hold a hundred buffers."""
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(_READ_SIZE))
    return view


class FrameReader(asyncio.BufferedProtocol):
    """Splits what is read into frames; a subclass decides per frame (``_frames``)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._view = _read_buffer()
        self._partial = bytearray()
        self._paused_by = 0  # bit mask of reasons reading is paused
        self._write_blocked = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        if self._partial:
            self._partial += self._view[:nbytes]
            data = memoryview(self._partial)
            used = self._frames(data)
            data.release()
            del self._partial[:used]
        else:
            data = self._view[:nbytes]
            used = self._frames(data)
            if used < nbytes:
                self._partial += data[used:]

    def _frames(self, data: memoryview) -> int:
        raise NotImplementedError

    def pause(self, reason: int) -> None:
        if not self._paused_by and self.transport is not None and not self.lost:
            self.transport.pause_reading()
        self._paused_by |= reason

    def resume(self, reason: int) -> None:
        was = self._paused_by
        self._paused_by &= ~reason
        if was and not self._paused_by and self.transport is not None and not self.lost:
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()



class Upstream(FrameReader):
    """The connection to the next hop: responses go back to ``down`` unchanged.

    Made with ``down=None`` it is a spare (dialled ahead, e.g. to tell the peer is up);
    :meth:`attach` hands it to a downstream connection."""

    def __init__(self, down: RelayConnection | None = None) -> None:
        super().__init__()
        self.down = down
        self.through = 0  # body bytes of a response still being passed on as they come
        self._skip = 0  # body bytes of a frame being thrown away
        self.top_id = 0  # the highest stream id sent on this connection so far

    def attach(self, down: RelayConnection | None) -> None:
        self.down = down

    @property
    def is_open(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def _frames(self, data: memoryview) -> int:
        down = self.down
        end = len(data)
        if down is None:
            return end  # a spare has no calls: nothing to answer
        pos = run = 0
        if self.through:
            pos = run = min(end, self.through)
            self.through -= pos
            down.write(bytes(data[:pos]))
            if not self.through:
                down.frame_done()
        elif self._skip:
            pos = run = min(end, self._skip)
            self._skip -= pos
        calls = down.calls
        limit = down.policy.max_message
        while end - pos >= HEADER_LENGTH:
            length, stream_id, type_, _flags = HEADER.unpack_from(data, pos)
            stop = pos + HEADER_LENGTH + length
            if stop > end and length <= CUT_THROUGH:
                break  # wait for the whole frame
            stream_id -= down.offset
            call = calls.pop(stream_id, None) if type_ == MessageType.RESPONSE else None
            if call is None or length > limit:
                if run < pos:
                    down.pass_back(data[run:pos])
                if call is not None:  # an oversized answer, as the ttrpc client reports it
                    down.finish(call)
                    error = OversizedMessage(length, limit)
                    down.send_status(stream_id, error.code, error.message)
                pos = run = min(stop, end)
                self._skip = stop - pos
                continue
            down.finish(call)
            if call.watched or down.policy.account is not None:
                down.answered(call, data[pos + HEADER_LENGTH : min(stop, end)], length)
            if stop > end:  # a large answer: pass on what is here, the rest as it comes
                down.pass_back(data[run:end])
                down.frame_started()
                self.through = stop - end
                return end
            pos = stop
        if run < pos:
            down.pass_back(data[run:pos])
        return pos

    def pause_writing(self) -> None:
        if self.down is not None:
            self.down.pause(PEER_WRITES)

    def resume_writing(self) -> None:
        if self.down is not None:
            self.down.resume(PEER_WRITES)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.down is not None:
            self.down.upstream_lost(self, exc)
