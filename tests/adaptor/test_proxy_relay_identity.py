"""Through the agent proxy and the forwarder (both hops, real classes), frames arrive byte for
byte, answers come back byte for byte, and malformed frames get exactly the statuses the
ttrpc server (which both hops used to be built on) gives them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import struct
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptor.proxy import AgentProxy, ForwarderDialer
from forwarder.apf.interceptor import Interceptor
from forwarder.apf.relay import AgentRelay
from protocols.ttrpc import Code, MessageType, Request, Server
from protocols.ttrpc.messages import Response, Status, encode_request, encode_response
from protocols.ttrpc.relay import RelayServer
from protocols.ttrpc.server import CallContext

HEADER = struct.Struct(">IIBB")
SERVICES = ("grpc.AgentService", "grpc.Health")
PASSED = ("Check", "Version", "ReadStdout", "WaitProcess", "ExecProcess", "Future", "")
_text = st.text(max_size=12)


def frame(stream_id: int, type_: int, body: bytes, flags: int = 0) -> bytes:
    return HEADER.pack(len(body), stream_id, type_, flags) + body


def split(data: bytes) -> list[bytes]:
    frames, pos = [], 0
    while len(data) - pos >= 10:
        length = HEADER.unpack_from(data, pos)[0]
        frames.append(data[pos : pos + 10 + length])
        pos += 10 + length
    return frames


def answer(request: bytes) -> bytes:
    """What the fake agent answers: derived from the request bytes, sometimes an error."""
    digest = hashlib.sha256(request).digest()
    stream_id = HEADER.unpack_from(request)[1]
    body = digest[: digest[0] % 24]
    if digest[1] % 4 == 0:
        body = b"\x0a\x0b\x08\x05\x12\x07missing" + body  # NOT_FOUND "missing"
    return frame(stream_id, MessageType.RESPONSE, body)


class RawAgent:
    """Records every byte it receives and answers each Request with :func:`answer`."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.sent: dict[int, bytes] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(10)
                body = await reader.readexactly(HEADER.unpack(header)[0])
                self.received += header + body
                if header[8] == MessageType.REQUEST:
                    reply = answer(header + body)
                    self.sent[HEADER.unpack(header)[1]] = reply
                    writer.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@st.composite
def valid(draw: st.DrawFn) -> Request:
    return Request(draw(st.sampled_from(SERVICES)), draw(st.sampled_from(PASSED)),
                   draw(st.binary(max_size=300)),
                   draw(st.sampled_from([0, 30_000_000_000])),
                   tuple(draw(st.lists(st.tuples(_text, _text), max_size=2))))


@st.composite
def malformed(draw: st.DrawFn, stream_id: int) -> bytes:
    kind = draw(st.sampled_from(["even", "streaming", "garbage", "service", "data",
                                 "response", "unknown-type"]))
    body = encode_request(Request(SERVICES[0], "Check", b"", 0, ()))
    if kind == "even":
        return frame(stream_id + 1, MessageType.REQUEST, body)
    if kind == "streaming":
        return frame(stream_id, MessageType.REQUEST, body, draw(st.sampled_from([2, 3, 6])))
    if kind == "garbage":
        junk = draw(st.binary(min_size=1, max_size=40).filter(lambda b: b[0] not in (0x0A,)))
        return frame(stream_id, MessageType.REQUEST, junk)
    if kind == "service":
        name = draw(_text.filter(lambda s: s not in SERVICES))
        return frame(stream_id, MessageType.REQUEST, encode_request(Request(name, "Check")))
    if kind == "data":
        return frame(stream_id, MessageType.DATA, draw(st.binary(max_size=20)), 1)
    if kind == "response":
        return frame(stream_id, MessageType.RESPONSE, draw(st.binary(max_size=20)))
    return frame(stream_id, draw(st.integers(4, 255)), draw(st.binary(max_size=20)))


@st.composite
def sessions(draw: st.DrawFn) -> list[tuple[bool, bytes]]:
    """(passes through?, frame) in send order; stream ids odd, increasing, distinct."""
    out: list[tuple[bool, bytes]] = []
    stream_id = 1
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.booleans()):
            out.append((True, frame(stream_id, MessageType.REQUEST,
                                    encode_request(draw(valid())))))
        else:
            out.append((False, draw(malformed(stream_id))))
        stream_id += 2 * draw(st.integers(1, 3))
    return out


async def _read_until(reader: asyncio.StreamReader, last: int) -> dict[int, bytes]:
    """Answers by stream id, until the answer on stream ``last`` (sent last) arrives."""
    answers: dict[int, bytes] = {}
    while last not in answers:
        header = await reader.readexactly(10)
        length, stream_id, _, _ = HEADER.unpack(header)
        answers[stream_id] = header + await reader.readexactly(length)
    return answers


async def _echo(ctx: CallContext, payload: bytes) -> bytes:
    return payload


async def reference(frames: list[bytes], last: bytes, tmp: str) -> dict[int, bytes]:
    """What a ttrpc server (the hops' former base) answers to ``frames`` + ``last``."""
    server = Server()
    for service in SERVICES:
        server.register_raw(service, _echo)
    path = f"{tmp}/ref.sock"
    await server.start_unix(path)
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"".join(frames) + last)
    answers = await _read_until(reader, HEADER.unpack_from(last)[1])
    writer.close()
    await server.shutdown(grace=0)
    return answers


@contextlib.asynccontextmanager
async def hops(tmp: str, agent: RawAgent) -> AsyncIterator[str]:
    agent_path = f"{tmp}/agent.sock"
    agent_server = await asyncio.start_unix_server(agent.handle, agent_path)
    relay = AgentRelay(agent_path, dial_timeout=5)
    forwarder = RelayServer(Interceptor(relay, pod_netns="/run/netns/x").policy())
    _, port = await forwarder.start_tcp("127.0.0.1", 0)
    proxy = AgentProxy("sb", f"{tmp}/pod/agent.ttrpc",
                       ForwarderDialer("sb", "127.0.0.1", port), proxy_timeout=5)
    await proxy.start()
    try:
        yield proxy.socket_path
    finally:
        await proxy.aclose()
        await forwarder.shutdown(grace=0)
        await relay.aclose()
        agent_server.close()


async def _session(session: list[tuple[bool, bytes]]) -> None:
    last_id = (max(HEADER.unpack_from(data)[1] for _, data in session) | 1) + 4
    last = frame(last_id, MessageType.REQUEST, encode_request(Request(SERVICES[1], "Check")))
    passed = [data for ok, data in session if ok] + [last]
    refused = [data for ok, data in session if not ok]
    with tempfile.TemporaryDirectory(prefix="rid", dir="/tmp") as tmp:
        expected = await reference(refused, last, tmp)
        agent = RawAgent()
        async with hops(tmp, agent) as path:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"".join(data for _, data in session) + last)
            answers = await _read_until(reader, last_id)
            writer.close()
    assert split(bytes(agent.received)) == passed  # byte for byte, in order
    for data in passed:
        stream_id = HEADER.unpack_from(data)[1]
        assert answers.pop(stream_id) == agent.sent[stream_id]
    expected.pop(last_id)
    assert answers == expected  # the same statuses for the refused frames, nothing else


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions())
def test_frames_pass_both_hops_unchanged(session: list[tuple[bool, bytes]]) -> None:
    asyncio.run(_session(session))


async def test_statuses_of_local_answers_are_the_servers() -> None:
    """Fixed examples, so a failure is easy to read."""
    session = [
        (False, frame(2, MessageType.REQUEST, encode_request(Request(SERVICES[0], "Check")))),
        (False, frame(3, MessageType.REQUEST, b"\x0a\xff")),
        (False, frame(5, MessageType.REQUEST, encode_request(Request("x.Y", "Z")))),
        (False, frame(7, MessageType.DATA, b"", 5)),
        (True, frame(9, MessageType.REQUEST, encode_request(Request(SERVICES[1], "Check")))),
    ]
    await _session(session)


async def test_answer_to_a_deadline_that_passes_in_the_relay(short_dir: str) -> None:
    """A call whose deadline passes before the agent answers gets DEADLINE_EXCEEDED from
    the relay; the agent's late answer is dropped."""
    tmp_path = Path(short_dir)
    agent_path = str(tmp_path / "agent.sock")
    hold = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(10)
        await reader.readexactly(HEADER.unpack(header)[0])
        await hold.wait()
        writer.write(frame(HEADER.unpack(header)[1], MessageType.RESPONSE, b"\x12\x01x"))
        await writer.drain()

    server = await asyncio.start_unix_server(handle, agent_path)
    relay = AgentRelay(agent_path, dial_timeout=5)
    forwarder = RelayServer(Interceptor(relay, pod_netns="/run/netns/x").policy())
    await forwarder.start_unix(str(tmp_path / "fwd.sock"))
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "fwd.sock"))
    request = encode_request(Request(SERVICES[1], "Check", b"", 50_000_000))
    writer.write(frame(1, MessageType.REQUEST, request))
    answers = await _read_until(reader, 1)
    hold.set()
    expected = encode_response(Response(Status(Code.DEADLINE_EXCEEDED,
                                               "context deadline exceeded")))
    assert answers[1] == frame(1, MessageType.RESPONSE, expected)
    writer.close()
    await forwarder.shutdown(grace=0)
    await relay.aclose()
    server.close()
