"""The transport half shared by client and server: frame decoding and write flow control."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from protocols.ttrpc.framing import MESSAGE_LENGTH_MAX, Frame, FrameDecoder, OversizedFrame

_READ_SIZE = 64 * 1024


class FrameProtocol(asyncio.BufferedProtocol):
    """An asyncio protocol that hands whole frames to :meth:`frame_received`.

    It reads into one reusable buffer (a plain ``Protocol`` allocates 256 KiB per read).

    Writes go straight to the transport; a writer that may produce a lot (a proxy relaying
    large messages) awaits :meth:`drain` so a slow peer cannot make the buffer grow forever.
    """

    def __init__(self, limit: int = MESSAGE_LENGTH_MAX) -> None:
        self.transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(limit)
        self._can_write: asyncio.Event | None = None
        self._lost = False
        self._read_buffer = memoryview(bytearray(_READ_SIZE))

    # asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        for frame in self._decoder.feed(self._read_buffer[:nbytes]):
            self.frame_received(frame)

    def pause_writing(self) -> None:
        self._can_write = asyncio.Event()

    def resume_writing(self) -> None:
        if self._can_write is not None:
            self._can_write.set()
            self._can_write = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.resume_writing()

    # for subclasses ---------------------------------------------------------------------
    def frame_received(self, frame: Frame | OversizedFrame) -> None:
        raise NotImplementedError

    @property
    def is_open(self) -> bool:
        return not self._lost and self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.is_open:
            assert self.transport is not None
            self.transport.write(data)

    async def drain(self) -> None:
        waiter = self._can_write
        if waiter is not None and not self._lost:
            await waiter.wait()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def peer(self) -> Any:
        if self.transport is None:
            return None
        return self.transport.get_extra_info("peername")
