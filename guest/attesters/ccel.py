"""The ``cc_eventlog`` of TDX evidence: the firmware CCEL, then the agent's own log (AAEL).

As upstream's ``read_eventlog``: the ACPI CCEL table trimmed at its end marker; without a
CCEL, a fixed EV_NO_ACTION header (sha384 and sm3 digest sizes) before the AAEL entries;
then an all-ones end flag. Nothing to send: None.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path

from guest.errors import AttesterError

CCEL_PATH = Path("/sys/firmware/acpi/tables/data/CCEL")
AAEL_PATH = Path("/run/attestation-agent/eventlog")

EL_HEADER = (
    bytes([0, 0, 0, 0, 3, 0, 0, 0])
    + bytes(20)
    + bytes([0x25, 0, 0, 0])
    + bytes(24)
    + bytes([2, 0, 0, 0, 0x0C, 0, 0x30, 0, 0x12, 0, 0x20, 0, 0])
)
EL_END_FLAG = b"\xff" * 8
EV_NO_ACTION = 0x3
DIGEST_LENGTHS = {0xB: 0x20, 0xC: 0x30, 0xD: 0x40, 0x12: 0x20}


def _u32(ccel: bytes, index: int, what: str) -> int:
    if len(ccel) < index + 4:
        raise AttesterError(f"invalid ccel: {what}")
    return int(struct.unpack_from("<I", ccel, index)[0])


def trim_ccel(ccel: bytes) -> bytes:
    """The CCEL up to (without) its end marker: an all-ones or all-zeros u64."""
    event_type = _u32(ccel, 4, "not enough length")
    index = 4 + 4 + 20
    if event_type == EV_NO_ACTION:
        index += 4 + _u32(ccel, index, "not enough length")
    while True:
        if len(ccel) < index + 8:
            raise AttesterError("invalid ccel: no end flag")
        if ccel[index : index + 8] in (EL_END_FLAG, bytes(8)):
            return ccel[:index]
        index += 8  # target register, event type
        count = _u32(ccel, index, "no digest length")
        index += 4
        for _ in range(count):
            if len(ccel) < index + 2:
                raise AttesterError("invalid ccel: no digest algorithm")
            (algorithm,) = struct.unpack_from("<H", ccel, index)
            if algorithm not in DIGEST_LENGTHS:
                raise AttesterError("invalid ccel: unsupported digest algorithm")
            index += 2 + DIGEST_LENGTHS[algorithm]
        index += 4 + _u32(ccel, index, "no event data size")


def read_eventlog(ccel_path: Path = CCEL_PATH, aael_path: Path = AAEL_PATH) -> str | None:
    """Base64 of CCEL + AAEL + end flag, as upstream sends it."""
    eventlog = b""
    if ccel_path.exists():
        eventlog = trim_ccel(ccel_path.read_bytes())
    if aael_path.exists():
        eventlog = (eventlog or EL_HEADER) + aael_path.read_bytes()
    if not eventlog:
        return None
    return base64.b64encode(eventlog + EL_END_FLAG).decode()
