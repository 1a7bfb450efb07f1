"""The guest-driver ioctls: request numbers as Linux defines them, and the structures,
against a fake driver standing in for the kernel's ioctl handler."""

from __future__ import annotations

import ctypes
import hashlib
import struct
from pathlib import Path

import pytest

from guest.attesters import ioctl
from guest.attesters.base import InitDataResult
from guest.attesters.tdx import TdxAttester
from guest.attesters.tsm import TsmReports
from guest.errors import AttesterError


def test_request_numbers_match_the_linux_headers() -> None:
    assert ioctl.TDX_CMD_GET_REPORT0 == 0xC4405401
    assert ioctl.SNP_GET_REPORT == 0xC0205300
    assert ioctl.SNP_REQUEST.size == 32 and ioctl.SNP_REPORT_REQ.size == 96


def fake_tdx_driver(mrconfigid: bytes) -> ioctl.Ioctl:
    def handler(fd: int, request: int, buffer: bytearray) -> None:
        assert request == ioctl.TDX_CMD_GET_REPORT0 and len(buffer) == 1088
        report = bytearray(1024)
        report[ioctl.MRCONFIGID] = mrconfigid
        buffer[64:] = report

    return handler


async def test_tdx_initdata_binding_reads_mrconfigid(tmp_path: Path) -> None:
    device = tmp_path / "tdx_guest"
    device.write_bytes(b"")
    digest = hashlib.sha384(b"initdata").digest()
    good = TdxAttester(
        TsmReports(tmp_path / "none"), device=device, ioctl_call=fake_tdx_driver(digest)
    )
    assert await good.bind_init_data(digest) is InitDataResult.OK
    short = hashlib.sha256(b"initdata").digest()  # padded with zeros to 48 bytes
    padded = TdxAttester(
        TsmReports(tmp_path / "none"), device=device, ioctl_call=fake_tdx_driver(short + bytes(16))
    )
    assert await padded.bind_init_data(short) is InitDataResult.OK
    with pytest.raises(AttesterError, match="Init data does not match!"):
        await good.bind_init_data(hashlib.sha384(b"other").digest())
    missing = TdxAttester(TsmReports(tmp_path / "none"), device=tmp_path / "absent")
    with pytest.raises(AttesterError, match="open"):
        await missing.bind_init_data(digest)


def test_snp_report_request_and_response(tmp_path: Path) -> None:
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    host_data = bytes(range(32))
    seen: dict[str, object] = {}

    def driver(fd: int, request: int, buffer: bytearray) -> None:
        version, req, resp, _ = ioctl.SNP_REQUEST.unpack(buffer)
        user_data, vmpl = ioctl.SNP_REPORT_REQ.unpack(ctypes.string_at(req, 96))
        seen.update(version=version, user_data=user_data, vmpl=vmpl)
        report = bytearray(ioctl.SNP_REPORT_LEN)
        report[0x50:0x90] = user_data
        report[ioctl.HOST_DATA] = host_data
        message = struct.pack("=II24x", 0, ioctl.SNP_REPORT_LEN) + bytes(report)
        ctypes.memmove(resp, message, len(message))

    report = ioctl.snp_report(b"\x07" * 64, vmpl=1, device=device, ioctl=driver)
    assert seen == {"version": 1, "user_data": b"\x07" * 64, "vmpl": 1}
    assert len(report) == 1184
    assert report[ioctl.HOST_DATA] == host_data and report[0x50:0x90] == b"\x07" * 64

    def failing(fd: int, request: int, buffer: bytearray) -> None:
        buffer[24:32] = (0x1234).to_bytes(8, "little")

    with pytest.raises(AttesterError, match="exitinfo2=0x1234"):
        ioctl.snp_report(device=device, ioctl=failing)
