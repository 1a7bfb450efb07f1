"""Byte-exact checks against the worked examples of PROTOCOLS.md §1.9."""

from __future__ import annotations

import pytest

from protocols.ttrpc import FrameDecoder, MessageType, Request, Response, Status, encode_frame
from protocols.ttrpc.messages import (
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

EXAMPLE_A = bytes.fromhex(
    "0000001a 00000001 01 00 0a0b 677270632e4865616c7468 1205 436865636b 2080d88ee16f"
    .replace(" ", "")
)
CREATE_VM_PAYLOAD = (
    b"\x0a\x03sb1"
    + b"\x12\x23\x0a\x1eio.kubernetes.cri.sandbox-name\x12\x01p"
    + b"\x1a\x10/var/run/netns/x"
)


def test_example_a_health_check_request() -> None:
    request = Request("grpc.Health", "Check", b"", 30_000_000_000)
    frame = encode_frame(1, MessageType.REQUEST, encode_request(request))
    assert frame == EXAMPLE_A
    [decoded] = FrameDecoder().feed(EXAMPLE_A)
    assert (decoded.stream_id, decoded.type, decoded.flags) == (1, 1, 0)
    assert decode_request(decoded.data) == request


def test_example_b_start_vm_request() -> None:
    expected = bytes.fromhex(
        "00000027000000030100"
        "0a1568797065727669736f722e48797065727669736f72"
        "1207537461727456" "4d"
        "1a050a03616263"
    )
    request = Request("hypervisor.Hypervisor", "StartVM", bytes.fromhex("0a03616263"))
    assert encode_frame(3, MessageType.REQUEST, encode_request(request)) == expected
    [frame] = FrameDecoder().feed(expected)
    assert decode_request(frame.data) == request


def test_example_c_create_vm_request() -> None:
    assert len(CREATE_VM_PAYLOAD) == 0x3C
    request = Request("hypervisor.Hypervisor", "CreateVM", CREATE_VM_PAYLOAD)
    frame = encode_frame(5, MessageType.REQUEST, encode_request(request))
    assert frame[:10] == bytes.fromhex("0000005f000000050100")
    assert frame[10:] == (
        b"\x0a\x15hypervisor.Hypervisor\x12\x08CreateVM\x1a\x3c" + CREATE_VM_PAYLOAD
    )


@pytest.mark.parametrize(
    ("hex_frame", "stream_id", "response"),
    [
        # Health OK from a Go server: no status field.
        ("00000004000000010200 12020801", 1, Response(None, b"\x08\x01")),
        # google.protobuf.Empty success from a Go server: a zero-length body.
        ("00000000000000050200", 5, Response(None, b"")),
        # Error NOT_FOUND "not found".
        (
            "0000000f000000030200 0a0d0805 12096e6f7420666f756e64",
            3,
            Response(Status(5, "not found"), b""),
        ),
    ],
)
def test_example_d_go_responses_round_trip(
    hex_frame: str, stream_id: int, response: Response
) -> None:
    raw = bytes.fromhex(hex_frame.replace(" ", ""))
    assert encode_frame(stream_id, MessageType.RESPONSE, encode_response(response)) == raw
    [frame] = FrameDecoder().feed(raw)
    assert frame.type == MessageType.RESPONSE
    assert decode_response(frame.data) == response


@pytest.mark.parametrize(
    ("hex_frame", "payload"),
    [
        ("00000006000000010200 0a00 12020801", b"\x08\x01"),  # Rust kata-agent Health OK
        ("00000002000000050200 0a00", b""),  # Rust Empty success
    ],
)
def test_example_d_rust_ok_status_decodes_as_ok(hex_frame: str, payload: bytes) -> None:
    [frame] = FrameDecoder().feed(bytes.fromhex(hex_frame.replace(" ", "")))
    response = decode_response(frame.data)
    assert response.status is not None and response.status.code == 0
    assert response.payload == payload


def test_decoder_handles_byte_by_byte_delivery() -> None:
    decoder = FrameDecoder()
    frames = []
    for byte in EXAMPLE_A + EXAMPLE_A:
        frames.extend(decoder.feed(bytes((byte,))))
    assert len(frames) == 2
    assert all(decode_request(f.data).method == "Check" for f in frames)
