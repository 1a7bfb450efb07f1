"""The ttrpc envelope messages (``ttrpc.Request``, ``ttrpc.Response``, ``google.rpc.Status``).

A small hand-written protobuf codec: the envelope is on every call's hot path and has five
fields, so it does not go through the protobuf runtime. Encoding follows Go's field order
and proto3 rules (zero values are omitted). Decoding skips unknown fields.
"""

from __future__ import annotations

from dataclasses import dataclass


class DecodeError(ValueError):
    """Bytes that are not a valid encoding of the expected message."""


@dataclass(frozen=True, slots=True)
class Status:
    code: int
    message: str = ""
    details: tuple[bytes, ...] = ()  # encoded google.protobuf.Any messages, kept opaque


@dataclass(frozen=True, slots=True)
class Request:
    service: str
    method: str
    payload: bytes = b""
    timeout_nano: int = 0
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Response:
    status: Status | None = None
    payload: bytes = b""


# --- primitives -------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int32/int64 negatives are ten-byte two's complement varints
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field_bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint too long")


def _fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field; length-delimited values as bytes."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    end = len(data)
    while pos < end:
        key = data[pos]
        if key < 0x80:  # every field number the envelope uses fits one byte
            pos += 1
        else:
            key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise DecodeError("invalid field number 0")
        if wire == 0:
            value, pos = _read_varint(data, pos)
            out.append((number, wire, value))
        elif wire == 2:
            if pos < end and data[pos] < 0x80:
                length = data[pos]
                pos += 1
            else:
                length, pos = _read_varint(data, pos)
            if pos + length > end:
                raise DecodeError(f"field {number}: length {length} past end of message")
            out.append((number, wire, bytes(data[pos : pos + length])))
            pos += length
        elif wire == 1:
            if pos + 8 > end:
                raise DecodeError("truncated fixed64")
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                raise DecodeError("truncated fixed32")
            pos += 4
        else:
            raise DecodeError(f"field {number}: unsupported wire type {wire}")
    return out


def _text(number: int, value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise DecodeError(f"field {number}: expected a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"field {number}: string is not valid UTF-8") from None


def _blob(number: int, value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError(f"field {number}: expected bytes")
    return value


def _integer(number: int, value: int | bytes, bits: int) -> int:
    if isinstance(value, bytes):
        raise DecodeError(f"field {number}: expected a varint")
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


# --- messages ---------------------------------------------------------------------------


def encode_status(status: Status) -> bytes:
    out = b""
    if status.code:
        out += b"\x08" + _varint(status.code)
    if status.message:
        out += _field_bytes(2, status.message.encode("utf-8"))
    for detail in status.details:
        out += _field_bytes(3, detail)
    return out


def decode_status(data: bytes) -> Status:
    code, message, details = 0, "", []
    for number, _wire, value in _fields(data):
        if number == 1:
            code = _integer(number, value, 32)
        elif number == 2:
            message = _text(number, value)
        elif number == 3:
            details.append(_blob(number, value))
    return Status(code, message, tuple(details))


def encode_request(request: Request) -> bytes:
    parts = []
    if request.service:
        parts.append(_field_bytes(1, request.service.encode("utf-8")))
    if request.method:
        parts.append(_field_bytes(2, request.method.encode("utf-8")))
    if request.payload:
        parts.append(_field_bytes(3, request.payload))
    if request.timeout_nano:
        parts.append(b"\x20" + _varint(request.timeout_nano))
    for key, value in request.metadata:
        entry = b""
        if key:
            entry += _field_bytes(1, key.encode("utf-8"))
        if value:
            entry += _field_bytes(2, value.encode("utf-8"))
        parts.append(_field_bytes(5, entry))
    return b"".join(parts)


def decode_request(data: bytes) -> Request:
    service, method, payload, timeout_nano = "", "", b"", 0
    metadata: list[tuple[str, str]] = []
    for number, _wire, value in _fields(data):
        if number == 1:
            service = _text(number, value)
        elif number == 2:
            method = _text(number, value)
        elif number == 3:
            payload = _blob(number, value)
        elif number == 4:
            timeout_nano = _integer(number, value, 64)
        elif number == 5:
            key, text = "", ""
            for inner, _w, item in _fields(_blob(number, value)):
                if inner == 1:
                    key = _text(inner, item)
                elif inner == 2:
                    text = _text(inner, item)
            metadata.append((key, text))
    return Request(service, method, payload, timeout_nano, tuple(metadata))


def encode_response(response: Response) -> bytes:
    out = b""
    if response.status is not None and (
        response.status.code or response.status.message or response.status.details
    ):
        out += _field_bytes(1, encode_status(response.status))
    if response.payload:
        out += _field_bytes(2, response.payload)
    return out


def decode_response(data: bytes) -> Response:
    status: Status | None = None
    payload = b""
    for number, _wire, value in _fields(data):
        if number == 1:
            status = decode_status(_blob(number, value))
        elif number == 2:
            payload = _blob(number, value)
    return Response(status, payload)


def scan_request(data: bytes | memoryview) -> tuple[str, str, int]:
    """``(service, method, timeout_nano)`` of an encoded Request, without copying its payload.

    The fields Go and Rust clients write (1-4, one-byte lengths for service and method) are
    read in place; anything else (metadata, unusual encodings, malformed input) goes through
    :func:`decode_request`, so errors and results are exactly the full decoder's."""
    service = method = ""
    timeout_nano = 0
    pos = 0
    end = len(data)
    try:
        while pos < end:
            key = data[pos]
            if key == 0x1A:  # payload: skip it
                length, pos = _read_varint(data, pos + 1)
                pos += length
                if pos > end:
                    break
            elif key == 0x0A or key == 0x12:
                length = data[pos + 1]
                if length >= 0x80 or pos + 2 + length > end:
                    break
                text = str(data[pos + 2 : pos + 2 + length], "utf-8")
                if key == 0x0A:
                    service = text
                else:
                    method = text
                pos += 2 + length
            elif key == 0x20:
                value, pos = _read_varint(data, pos + 1)
                timeout_nano = _integer(4, value, 64)
            else:
                break
        else:
            return service, method, timeout_nano
    except (IndexError, UnicodeDecodeError, DecodeError):
        pass
    request = decode_request(bytes(data))
    return request.service, request.method, request.timeout_nano


def scan_status(data: bytes | memoryview) -> tuple[int, str]:
    """Code and message of the status at the start of an encoded Response (``(0, "")`` when
    it has none or it cannot be read; a relay passes the bytes on either way)."""
    if len(data) < 2 or data[0] != 0x0A:
        return 0, ""
    try:
        length, pos = _read_varint(data, 1)
        status = decode_status(bytes(data[pos : pos + length]))
    except (DecodeError, IndexError):
        return 0, ""
    return status.code, status.message
