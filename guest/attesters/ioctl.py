"""The guest-driver ioctls: ``/dev/tdx_guest`` TDREPORT and ``/dev/sev-guest`` SNP report.

Used where configfs-tsm does not serve the purpose: the TDREPORT holds MRCONFIGID (initdata
binding on TDX), and the SNP report holds HOST_DATA (initdata binding on SNP).
Structures from linux/tdx-guest.h and linux/sev-guest.h.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Callable
from pathlib import Path

from guest.errors import AttesterError

TDX_GUEST_DEVICE = Path("/dev/tdx_guest")
SEV_GUEST_DEVICE = Path("/dev/sev-guest")

_IOC_WRITE, _IOC_READ = 1, 2


def iowr(kind: str, nr: int, size: int) -> int:
    """Linux ``_IOWR(kind, nr, size)``."""
    return ((_IOC_READ | _IOC_WRITE) << 30) | (size << 16) | (ord(kind) << 8) | nr


# struct tdx_report_req { __u8 reportdata[64]; __u8 tdreport[1024]; }
TDX_REPORT_DATA_LEN, TDX_REPORT_LEN = 64, 1024
TDX_CMD_GET_REPORT0 = iowr("T", 1, TDX_REPORT_DATA_LEN + TDX_REPORT_LEN)
# TDREPORT_STRUCT: REPORTMACSTRUCT (256) + TEE_TCB_INFO (239) + reserved (17), then
# TDINFO_STRUCT: ATTRIBUTES (8), XFAM (8), MRTD (48), MRCONFIGID (48), ...
MRCONFIGID = slice(512 + 8 + 8 + 48, 512 + 8 + 8 + 48 + 48)
# ... MROWNER (48), MROWNERCONFIG (48), RTMR[4] (48 each)
_RTMR0 = MRCONFIGID.stop + 48 + 48


def rtmr_slice(index: int) -> slice:
    """RTMR<index> in the TDREPORT."""
    return slice(_RTMR0 + 48 * index, _RTMR0 + 48 * (index + 1))


# struct snp_guest_request_ioctl { __u8 msg_version; __u64 req_data; __u64 resp_data;
#                                  __u64 exitinfo2; }  (32 bytes with padding)
SNP_REQUEST = struct.Struct("=B7xQQQ")
SNP_GET_REPORT = iowr("S", 0, SNP_REQUEST.size)
SNP_REPORT_REQ = struct.Struct("=64sI28x")  # user_data, vmpl
SNP_REPORT_RESP_LEN = 4000
SNP_REPORT_OFFSET = 32  # MSG_REPORT_RSP: status, report_size, reserved[24], report
SNP_REPORT_LEN = 1184
HOST_DATA = slice(0xC0, 0xC0 + 32)

Ioctl = Callable[[int, int, bytearray], None]


def default_ioctl(fd: int, request: int, buffer: bytearray) -> None:
    fcntl.ioctl(fd, request, buffer, True)


def _with_device(device: Path, request: int, buffer: bytearray, ioctl: Ioctl) -> None:
    try:
        fd = os.open(device, os.O_RDWR)
    except OSError as exc:
        raise AttesterError(f"open {device} failed: {exc}") from exc
    try:
        ioctl(fd, request, buffer)
    except OSError as exc:
        raise AttesterError(f"ioctl on {device} failed: {exc}") from exc
    finally:
        os.close(fd)


def tdx_report(
    report_data: bytes = bytes(64), *, device: Path = TDX_GUEST_DEVICE, ioctl: Ioctl = default_ioctl
) -> bytes:
    """The 1024-byte TDREPORT for ``report_data`` (zero-padded to 64 bytes)."""
    buffer = bytearray(report_data[:64].ljust(64, b"\0") + bytes(TDX_REPORT_LEN))
    _with_device(device, TDX_CMD_GET_REPORT0, buffer, ioctl)
    return bytes(buffer[TDX_REPORT_DATA_LEN:])


def snp_report(
    report_data: bytes = bytes(64),
    *,
    vmpl: int = 0,
    device: Path = SEV_GUEST_DEVICE,
    ioctl: Ioctl = default_ioctl,
) -> bytes:
    """The raw SNP ATTESTATION_REPORT (1184 bytes) for ``report_data``."""
    request = ctypes.create_string_buffer(SNP_REPORT_REQ.pack(report_data[:64], vmpl))
    response = ctypes.create_string_buffer(SNP_REPORT_RESP_LEN)
    buffer = bytearray(
        SNP_REQUEST.pack(1, ctypes.addressof(request), ctypes.addressof(response), 0)
    )
    _with_device(device, SNP_GET_REPORT, buffer, ioctl)
    _, _, _, exitinfo2 = SNP_REQUEST.unpack(buffer)
    if exitinfo2:
        raise AttesterError(f"SNP_GET_REPORT failed: exitinfo2={exitinfo2:#x}")
    status, size = struct.unpack_from("=II", response.raw)
    if status != 0 or size < SNP_REPORT_LEN:
        raise AttesterError(f"SNP_GET_REPORT failed: status={status} report_size={size}")
    return response.raw[SNP_REPORT_OFFSET : SNP_REPORT_OFFSET + SNP_REPORT_LEN]


# struct snp_ext_report_req { struct snp_report_req data; __u64 certs_address;
#                             __u32 certs_len; }  (112 bytes with padding)
SNP_EXT_REPORT_REQ = struct.Struct("=64sI28xQI4x")
SNP_GET_EXT_REPORT = iowr("S", 2, SNP_REQUEST.size)
#: SNP_GUEST_VMM_ERR_INVALID_LEN, in exitinfo2's upper 32 bits: certs_len now says how much
VMM_ERR_INVALID_LEN = 1
PAGE = 4096
#: the first certificate buffer: four pages hold VCEK + ASK + ARK with room to spare
CERTS_FIRST_LEN = 4 * PAGE
#: SEV_FW_BLOB_MAX_SIZE: the kernel's upper bound for the certificate buffer
CERTS_MAX_LEN = 0x4000 * 16


def snp_ext_report(
    report_data: bytes = bytes(64),
    *,
    vmpl: int = 0,
    device: Path = SEV_GUEST_DEVICE,
    ioctl: Ioctl = default_ioctl,
) -> tuple[bytes, bytes | None]:
    """SNP_GET_EXT_REPORT: the raw report and the host's certificate table (GHCB layout).

    A buffer too small fails with EIO, exitinfo2 ``SNP_GUEST_VMM_ERR_INVALID_LEN << 32`` and
    ``certs_len`` set to the size needed; the request is then repeated with that size. An
    all-zero table (the host has no certificates) is None, as the ``sev`` crate returns it.
    """
    try:
        fd = os.open(device, os.O_RDWR)
    except OSError as exc:
        raise AttesterError(f"open {device} failed: {exc}") from exc
    try:
        certs_len = CERTS_FIRST_LEN
        for _ in range(2):
            result = _ext_report_once(fd, report_data, vmpl, certs_len, ioctl)
            if isinstance(result, tuple):
                return result
            if not 0 < result <= CERTS_MAX_LEN:
                raise AttesterError(f"SNP_GET_EXT_REPORT: bad certificate length {result}")
            certs_len = -(-result // PAGE) * PAGE
        raise AttesterError("SNP_GET_EXT_REPORT: certificate length keeps changing")
    finally:
        os.close(fd)


def _ext_report_once(
    fd: int, report_data: bytes, vmpl: int, certs_len: int, ioctl: Ioctl
) -> tuple[bytes, bytes | None] | int:
    """The report and table, or the certificate length the host asks for."""
    certs = ctypes.create_string_buffer(certs_len)
    request = ctypes.create_string_buffer(
        SNP_EXT_REPORT_REQ.pack(report_data[:64], vmpl, ctypes.addressof(certs), certs_len)
    )
    response = ctypes.create_string_buffer(SNP_REPORT_RESP_LEN)
    buffer = bytearray(
        SNP_REQUEST.pack(1, ctypes.addressof(request), ctypes.addressof(response), 0)
    )
    try:
        ioctl(fd, SNP_GET_EXT_REPORT, buffer)
    except OSError as exc:
        exitinfo2 = SNP_REQUEST.unpack(buffer)[3]
        if exc.errno == errno.EIO and exitinfo2 >> 32 == VMM_ERR_INVALID_LEN:
            return int(SNP_EXT_REPORT_REQ.unpack_from(request.raw)[3])
        raise AttesterError(f"SNP_GET_EXT_REPORT failed: {exc} (exitinfo2={exitinfo2:#x})") from exc
    exitinfo2 = SNP_REQUEST.unpack(buffer)[3]
    if exitinfo2:
        raise AttesterError(f"SNP_GET_EXT_REPORT failed: exitinfo2={exitinfo2:#x}")
    status, size = struct.unpack_from("=II", response.raw)
    if status != 0 or size < SNP_REPORT_LEN:
        raise AttesterError(f"SNP_GET_EXT_REPORT failed: status={status} report_size={size}")
    report = response.raw[SNP_REPORT_OFFSET : SNP_REPORT_OFFSET + SNP_REPORT_LEN]
    table = certs.raw
    return report, (table if any(table) else None)
