"""ttrpc framing: the 10-byte header and an incremental frame decoder. Bytes only, no I/O.

Header (big-endian): uint32 data length, uint32 stream id, uint8 type, uint8 flags.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from protocols.ttrpc.status import OversizedMessage

HEADER_LENGTH = 10
MESSAGE_LENGTH_MAX = 4 << 20

_HEADER = struct.Struct(">IIBB")


class MessageType(IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


class Flags(IntFlag):
    NONE = 0
    REMOTE_CLOSED = 1
    REMOTE_OPEN = 2
    NO_DATA = 4


@dataclass(frozen=True, slots=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    data: bytes


@dataclass(frozen=True, slots=True)
class OversizedFrame:
    """A frame whose body exceeded the limit; the body was read and thrown away."""

    stream_id: int
    type: int
    flags: int
    length: int


def encode_header(length: int, stream_id: int, type_: int, flags: int = 0) -> bytes:
    return _HEADER.pack(length, stream_id, type_, flags)


def encode_frame(
    stream_id: int, type_: int, data: bytes, flags: int = 0, *, limit: int = MESSAGE_LENGTH_MAX
) -> bytes:
    """One frame, header and data. Refuses data over ``limit`` with :class:`OversizedMessage`."""
    if len(data) > limit:
        raise OversizedMessage(len(data), limit)
    return _HEADER.pack(len(data), stream_id, type_, flags) + data


class FrameDecoder:
    """Turns a byte stream into frames. Oversized bodies are skipped without buffering them."""

    __slots__ = ("_buffer", "_limit", "_skip", "_skipped_header")

    def __init__(self, limit: int = MESSAGE_LENGTH_MAX) -> None:
        self._buffer = bytearray()
        self._limit = limit
        self._skip = 0
        self._skipped_header: tuple[int, int, int, int] | None = None

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes | memoryview) -> list[Frame | OversizedFrame]:
        frames: list[Frame | OversizedFrame] = []
        view = memoryview(data)
        if self._skip:
            taken = min(self._skip, len(view))
            self._skip -= taken
            view = view[taken:]
            if self._skip:
                return frames
            frames.append(self._finish_skip())
        buffer = self._buffer
        buffer += view
        offset = 0
        end = len(buffer)
        while end - offset >= HEADER_LENGTH:
            length, stream_id, type_, flags = _HEADER.unpack_from(buffer, offset)
            if length > self._limit:
                available = end - offset - HEADER_LENGTH
                if available >= length:
                    offset += HEADER_LENGTH + length
                    frames.append(OversizedFrame(stream_id, type_, flags, length))
                    continue
                self._skip = length - available
                self._skipped_header = (stream_id, type_, flags, length)
                offset = end
                break
            stop = offset + HEADER_LENGTH + length
            if stop > end:
                break
            body = bytes(buffer[offset + HEADER_LENGTH : stop])
            frames.append(Frame(stream_id, type_, flags, body))
            offset = stop
        if offset:
            del buffer[:offset]
        return frames

    def _finish_skip(self) -> OversizedFrame:
        assert self._skipped_header is not None
        stream_id, type_, flags, length = self._skipped_header
        self._skipped_header = None
        return OversizedFrame(stream_id, type_, flags, length)
