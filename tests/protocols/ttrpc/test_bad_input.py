"""Property tests: random, truncated and oversized input never takes the server down."""

from __future__ import annotations

import asyncio
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.ttrpc import (
    MESSAGE_LENGTH_MAX,
    Client,
    FrameDecoder,
    MessageType,
    Request,
    Server,
    encode_frame,
)
from protocols.ttrpc.messages import DecodeError, decode_request, decode_response, encode_request
from tests.protocols.ttrpc.conftest import echo

_text = st.text(max_size=20)
_requests = st.builds(
    Request,
    service=st.sampled_from(["test.Echo", "grpc.Health", ""]) | _text,
    method=_text,
    payload=st.binary(max_size=64),
    timeout_nano=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    metadata=st.lists(st.tuples(_text, _text), max_size=3).map(tuple),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["valid", "garbage-body", "lying-length", "oversized", "raw"]))
    stream_id = draw(st.integers(min_value=0, max_value=2**32 - 1))
    type_ = draw(st.integers(min_value=0, max_value=255))
    flags = draw(st.integers(min_value=0, max_value=255))
    if kind == "valid":
        body = encode_request(draw(_requests))
        return struct.pack(">IIBB", len(body), stream_id, MessageType.REQUEST, flags) + body
    if kind == "garbage-body":
        body = draw(st.binary(max_size=200))
        return struct.pack(">IIBB", len(body), stream_id, type_, flags) + body
    if kind == "lying-length":  # declares more than it sends: the stream ends mid-frame
        body = draw(st.binary(max_size=100))
        declared = len(body) + draw(st.integers(min_value=1, max_value=1000))
        return struct.pack(">IIBB", declared, stream_id, type_, flags) + body
    if kind == "oversized":
        declared = draw(st.integers(min_value=MESSAGE_LENGTH_MAX + 1, max_value=2**32 - 1))
        tail = draw(st.binary(max_size=100))
        return struct.pack(">IIBB", declared, stream_id, MessageType.REQUEST, flags) + tail
    return draw(st.binary(max_size=300))


async def _attack_and_check(path: str, server: Server, chunks: list[bytes]) -> None:
    good = await Client.connect_unix(path)
    reader, writer = await asyncio.open_unix_connection(path)
    for chunk in chunks:
        writer.write(chunk)
    await writer.drain()
    # Whatever the bad connection does, a well-formed call on another connection works.
    assert await good.call_raw("test.Echo", "Any", b"alive", timeout=5) == b"alive"
    writer.write_eof()
    # The server answers what it could parse and closes the connection at EOF: read it all.
    replies = await asyncio.wait_for(reader.read(), 5)
    for frame in FrameDecoder().feed(replies):
        assert frame.type == MessageType.RESPONSE
        decode_response(frame.data)  # every reply is a well-formed Response
    writer.close()
    assert await good.call_raw("test.Echo", "Any", b"still", timeout=5) == b"still"
    await good.aclose()


async def _scenario(chunks: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "s.sock")
        server = Server()
        server.register_raw("test.Echo", echo)
        await server.start_unix(path)
        try:
            await _attack_and_check(path, server, chunks)
        finally:
            await server.shutdown(grace=0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames(), min_size=1, max_size=6))
def test_server_survives_random_frames(chunks: list[bytes]) -> None:
    asyncio.run(_scenario(chunks))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=1, max_value=50), max_size=20))
def test_decoder_is_independent_of_chunking(stream: bytes, cuts: list[int]) -> None:
    whole = FrameDecoder(limit=64).feed(stream)
    decoder = FrameDecoder(limit=64)
    pieces = []
    pos = 0
    for cut in cuts:
        pieces.extend(decoder.feed(stream[pos : pos + cut]))
        pos += cut
    pieces.extend(decoder.feed(stream[pos:]))
    assert pieces == whole


@settings(max_examples=300, deadline=None)
@given(_requests)
def test_request_codec_round_trips(request: Request) -> None:
    assert decode_request(encode_request(request)) == request


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_request_decoder_raises_only_decode_error(data: bytes) -> None:
    try:
        decode_request(data)
    except DecodeError:
        pass


def test_oversized_frame_is_skipped_without_buffering() -> None:
    decoder = FrameDecoder(limit=16)
    header = struct.pack(">IIBB", 1_000_000, 1, MessageType.REQUEST, 0)
    assert decoder.feed(header + b"x" * 100) == []
    assert decoder.pending == 0
    for _ in range(9):
        assert decoder.feed(b"x" * 100_000) == []
    [skipped, frame] = decoder.feed(b"x" * 99_900 + encode_frame(3, MessageType.REQUEST, b"ok"))
    assert (skipped.stream_id, skipped.length) == (1, 1_000_000)  # type: ignore[union-attr]
    assert frame.data == b"ok"  # type: ignore[union-attr]
