"""Client and server behaviour over real sockets."""

from __future__ import annotations

import ast
import asyncio
import datetime
import ssl
import struct
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import wrappers_pb2

from protocols.ttrpc import (
    MESSAGE_LENGTH_MAX,
    CallContext,
    Client,
    Code,
    ConnectionClosed,
    MessageType,
    Method,
    OversizedMessage,
    Request,
    Server,
    TTRPCError,
    encode_frame,
)
from protocols.ttrpc.messages import decode_response, encode_request
from protocols.ttrpc.testing import connect_pair
from tests.protocols.ttrpc.conftest import read_frame


async def test_many_calls_in_flight_complete_out_of_order(unix_path: str) -> None:
    async with await Client.connect_unix(unix_path) as client:
        finished: list[int] = []

        async def one(i: int) -> bytes:
            payload = f"sleep:{(100 - i) * 0.002}".encode()
            result = await client.call_raw("test.Echo", "Any", payload)
            finished.append(i)
            return result

        results = await asyncio.gather(*(one(i) for i in range(100)))
    assert results == [f"sleep:{(100 - i) * 0.002}".encode() for i in range(100)]
    assert finished[0] > finished[-1]  # later requests, shorter sleeps: they finished first


async def test_client_stream_ids_are_odd_and_increasing(tmp_path: Path) -> None:
    seen: list[int] = []

    async def fake_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(20):
            stream_id, _type, _flags, _data = await read_frame(reader)
            seen.append(stream_id)
            writer.write(encode_frame(stream_id, MessageType.RESPONSE, b""))
        writer.close()

    path = str(tmp_path / "raw.sock")
    listener = await asyncio.start_unix_server(fake_server, path)
    async with listener, await Client.connect_unix(path) as client:
        await asyncio.gather(*(client.call_raw("a.B", "C", b"") for _ in range(20)))
    assert seen == list(range(1, 41, 2))


async def test_server_accepts_odd_ids_in_any_order_and_rejects_even(unix_path: str) -> None:
    reader, writer = await asyncio.open_unix_connection(unix_path)
    for stream_id in (7, 3, 5, 4):
        req = encode_request(Request("test.Echo", "Any", f"id{stream_id}".encode()))
        writer.write(encode_frame(stream_id, MessageType.REQUEST, req))
    answers = {}
    for _ in range(4):
        stream_id, type_, _flags, data = await read_frame(reader)
        assert type_ == MessageType.RESPONSE
        answers[stream_id] = decode_response(data)
    writer.close()
    for stream_id in (7, 3, 5):
        assert answers[stream_id].status is None
        assert answers[stream_id].payload == f"id{stream_id}".encode()
    status = answers[4].status
    assert status is not None and status.code == Code.INVALID_ARGUMENT
    assert "odd" in status.message


async def test_error_status_round_trip(server: Server) -> None:
    client = await connect_pair(server)
    with pytest.raises(TTRPCError) as info:
        await client.call_raw("test.Echo", "Any", b"error:9:container xyz is not running")
    assert info.value.code == Code.FAILED_PRECONDITION
    assert info.value.message == "container xyz is not running"
    assert await client.call_raw("test.Echo", "Any", b"still ok") == b"still ok"
    await client.aclose()


async def test_unknown_service_and_method_are_unimplemented(server: Server) -> None:
    client = await connect_pair(server)
    with pytest.raises(TTRPCError) as info:
        await client.call_raw("nope.Service", "Any", b"")
    assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, "service nope.Service")
    server.register("typed.Service/Known", Method(_typed_echo, wrappers_pb2.StringValue,
                                                 wrappers_pb2.StringValue))
    with pytest.raises(TTRPCError) as info:
        await client.call_raw("typed.Service", "Unknown", b"")
    assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, "method Unknown")
    await client.aclose()


async def _typed_echo(
    request: wrappers_pb2.StringValue, ctx: CallContext
) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=f"{ctx.method}:{request.value}")


async def test_decoded_methods_and_bad_payload(server: Server) -> None:
    server.register_service(
        "typed.Service",
        {"Echo": Method(_typed_echo, wrappers_pb2.StringValue, wrappers_pb2.StringValue)},
    )
    client = await connect_pair(server)
    reply = await client.call(
        "typed.Service", "Echo", wrappers_pb2.StringValue(value="hi"), wrappers_pb2.StringValue
    )
    assert reply.value == "Echo:hi"
    with pytest.raises(TTRPCError) as info:
        await client.call_raw("typed.Service", "Echo", b"\x0a\x05ab")  # length past the end
    assert info.value.code == Code.INVALID_ARGUMENT
    await client.aclose()


async def test_undecodable_request_is_invalid_argument(unix_path: str) -> None:
    reader, writer = await asyncio.open_unix_connection(unix_path)
    writer.write(encode_frame(1, MessageType.REQUEST, b"\x0a\x7f\x00"))
    stream_id, _type, _flags, data = await read_frame(reader)
    status = decode_response(data).status
    assert stream_id == 1 and status is not None
    assert status.code == Code.INVALID_ARGUMENT
    assert status.message.startswith("unmarshal request error:")
    writer.close()


async def test_handler_exception_is_unknown_and_server_keeps_serving(server: Server) -> None:
    client = await connect_pair(server)
    with pytest.raises(TTRPCError) as info:
        await client.call_raw("test.Echo", "Any", b"boom")
    assert (info.value.code, info.value.message) == (Code.UNKNOWN, "handler exploded")
    assert await client.call_raw("test.Echo", "Any", b"after") == b"after"
    await client.aclose()


async def test_deadline_reaches_handler_and_expires(server: Server) -> None:
    client = await connect_pair(server)
    remaining = float(await client.call_raw("test.Echo", "Any", b"deadline", timeout=30))
    assert 29 < remaining <= 30
    assert await client.call_raw("test.Echo", "Any", b"deadline") == b"None"
    with pytest.raises(TTRPCError) as info:
        await client.call_raw("test.Echo", "Any", b"sleep:5", timeout=0.05)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    await client.aclose()


async def test_server_enforces_deadline_itself(unix_path: str) -> None:
    reader, writer = await asyncio.open_unix_connection(unix_path)
    req = encode_request(Request("test.Echo", "Any", b"sleep:5", timeout_nano=50_000_000))
    writer.write(encode_frame(1, MessageType.REQUEST, req))
    _sid, _type, _flags, data = await asyncio.wait_for(read_frame(reader), 2)
    status = decode_response(data).status
    assert status is not None and status.code == Code.DEADLINE_EXCEEDED
    writer.close()


async def test_metadata_and_deadline_pass_through_a_relay(tmp_path: Path) -> None:
    """A raw relay (as the agent proxy) passes metadata and the remaining deadline on."""
    backend = Server()
    backend.register_raw("test.Echo", _report)
    backend_path = str(tmp_path / "backend.sock")
    await backend.start_unix(backend_path)
    upstream = await Client.connect_unix(backend_path)

    async def relay(ctx: CallContext, payload: bytes) -> bytes:
        return await upstream.forward(ctx, payload)

    front = Server()
    front.register_raw("test.Echo", relay)
    client = await connect_pair(front)
    meta = (("traceparent", "00-abc-def-01"), ("x-multi", "1"), ("x-multi", "2"))
    answer = await client.call_raw("test.Echo", "Any", b"", timeout=10, metadata=meta)
    seen_meta, seen_remaining = ast.literal_eval(answer.decode())
    assert seen_meta == meta
    assert 9 < seen_remaining <= 10
    with pytest.raises(TTRPCError) as info:
        await client.call_raw("test.Echo", "Fail", b"", timeout=10)
    assert (info.value.code, info.value.message) == (Code.NOT_FOUND, "no such container")
    await client.aclose()
    await upstream.aclose()
    await front.shutdown(grace=0)
    await backend.shutdown(grace=0)


async def _report(ctx: CallContext, payload: bytes) -> bytes:
    if ctx.method == "Fail":
        raise TTRPCError(Code.NOT_FOUND, "no such container")
    return repr((ctx.metadata, ctx.remaining())).encode()


async def test_client_refuses_oversized_request(server: Server) -> None:
    client = await connect_pair(server)
    with pytest.raises(OversizedMessage) as info:
        await client.call_raw("test.Echo", "Any", b"x" * MESSAGE_LENGTH_MAX)
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert "exceed maximum message size of 4194304" in info.value.message
    assert await client.call_raw("test.Echo", "Any", b"ok") == b"ok"
    await client.aclose()


async def test_oversized_inbound_request_gets_resource_exhausted(unix_path: str) -> None:
    reader, writer = await asyncio.open_unix_connection(unix_path)
    body = b"\x0a" + b"\x00" * (MESSAGE_LENGTH_MAX + 10)
    writer.write(struct.pack(">IIBB", len(body), 1, MessageType.REQUEST, 0) + body)
    ok = encode_request(Request("test.Echo", "A", b"ok"))
    writer.write(encode_frame(3, MessageType.REQUEST, ok))
    first = await read_frame(reader)
    second = await read_frame(reader)
    writer.close()
    status = decode_response(first[3]).status
    assert first[0] == 1 and status is not None and status.code == Code.RESOURCE_EXHAUSTED
    assert status.message == f"message length {len(body)} exceed maximum message size of 4194304"
    assert second[0] == 3 and decode_response(second[3]).payload == b"ok"


async def test_oversized_response_becomes_resource_exhausted(server: Server) -> None:
    client = await connect_pair(server)
    with pytest.raises(TTRPCError) as info:
        await client.call_raw("test.Echo", "Any", f"big:{MESSAGE_LENGTH_MAX + 1}".encode())
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert len(await client.call_raw("test.Echo", "Any", b"big:1000")) == 1000
    await client.aclose()


async def test_client_survives_oversized_response_frame(tmp_path: Path) -> None:
    async def fake_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream_id, *_ = await read_frame(reader)
        big = b"\x12" + b"\x00" * (MESSAGE_LENGTH_MAX + 1)
        writer.write(struct.pack(">IIBB", len(big), stream_id, MessageType.RESPONSE, 0) + big)
        stream_id, *_ = await read_frame(reader)
        writer.write(encode_frame(stream_id, MessageType.RESPONSE, b"\x12\x02hi"))
        await writer.drain()
        await reader.read()

    path = str(tmp_path / "raw.sock")
    listener = await asyncio.start_unix_server(fake_server, path)
    async with listener, await Client.connect_unix(path) as client:
        with pytest.raises(TTRPCError) as info:
            await client.call_raw("a.B", "C", b"")
        assert info.value.code == Code.RESOURCE_EXHAUSTED
        assert await client.call_raw("a.B", "C", b"") == b"hi"


async def test_closed_connection_fails_pending_calls(server: Server) -> None:
    client = await connect_pair(server)
    pending = asyncio.ensure_future(client.call_raw("test.Echo", "Any", b"sleep:10"))
    await asyncio.sleep(0.05)
    await client.aclose()
    with pytest.raises(ConnectionClosed, match="ttrpc: closed"):
        await pending
    with pytest.raises(ConnectionClosed):
        await client.call_raw("test.Echo", "Any", b"x")


async def test_server_going_away_fails_pending_calls(unix_path: str, server: Server) -> None:
    client = await Client.connect_unix(unix_path)
    pending = asyncio.ensure_future(client.call_raw("test.Echo", "Any", b"sleep:10"))
    await asyncio.sleep(0.05)
    await server.shutdown(grace=0)
    with pytest.raises((ConnectionClosed, TTRPCError)):
        await pending
    await client.wait_closed()
    assert client.closed


async def test_handler_is_cancelled_when_client_disconnects(tmp_path: Path) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def waiter(ctx: CallContext, payload: bytes) -> bytes:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b""

    srv = Server()
    srv.register_raw("test.Wait", waiter)
    client = await connect_pair(srv)
    call = asyncio.ensure_future(client.call_raw("test.Wait", "Any", b""))
    await started.wait()
    await client.aclose()
    await asyncio.wait_for(cancelled.wait(), 2)
    with pytest.raises(ConnectionClosed):
        await call
    await srv.shutdown(grace=0)


async def test_shutdown_finishes_calls_in_flight_and_stops_accepting(
    unix_path: str, server: Server
) -> None:
    client = await Client.connect_unix(unix_path)
    pending = asyncio.ensure_future(client.call_raw("test.Echo", "Any", b"sleep:0.2"))
    await asyncio.sleep(0.05)
    await server.shutdown(grace=5)
    assert await pending == b"sleep:0.2"
    with pytest.raises(OSError):
        await Client.connect_unix(unix_path)
    await client.aclose()


async def test_tcp_transport(server: Server) -> None:
    host, port = await server.start_tcp("127.0.0.1", 0)
    async with await Client.connect_tcp(host, port) as client:
        assert await client.call_raw("test.Echo", "Any", b"over tcp") == b"over tcp"


def _cert(
    name: str, issuer_key: ec.EllipticCurvePrivateKey | None = None,
    issuer: x509.Name | None = None, ca: bool = False,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _write_pair(
    path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> tuple[str, str]:
    key_file, cert_file = path.with_suffix(".key"), path.with_suffix(".crt")
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(cert_file), str(key_file)


async def test_mutual_tls_transport(server: Server, tmp_path: Path) -> None:
    ca_key, ca_cert = _cert("test-ca", ca=True)
    server_files = _write_pair(tmp_path / "server", *_cert("podvm-x", ca_key, ca_cert.subject))
    client_files = _write_pair(tmp_path / "client", *_cert("client", ca_key, ca_cert.subject))
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca_pem)
    server_ctx.load_cert_chain(*server_files)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    host, port = await server.start_tcp("127.0.0.1", 0, ssl=server_ctx)

    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem)
    client_ctx.load_cert_chain(*client_files)
    async with await Client.connect_tcp(
        host, port, ssl=client_ctx, server_hostname="podvm-x"
    ) as client:
        assert await client.call_raw("test.Echo", "Any", b"secret") == b"secret"

    anonymous = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem)
    with pytest.raises((ssl.SSLError, ConnectionError, ConnectionClosed)):
        client = await Client.connect_tcp(host, port, ssl=anonymous, server_hostname="podvm-x")
        await client.call_raw("test.Echo", "Any", b"secret", timeout=5)
