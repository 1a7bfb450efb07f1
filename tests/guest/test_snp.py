"""The SEV-SNP attester: report layout, its serde JSON form, certificates, HOST_DATA binding."""

from __future__ import annotations

import ctypes
import errno
import struct
import uuid
from pathlib import Path

import pytest

from guest.attesters import ioctl
from guest.attesters.base import InitDataResult
from guest.attesters.snp import SnpAttester
from guest.attesters.snp_report import cert_chain_json, report_json
from guest.attesters.tsm import TsmReports
from guest.errors import AttesterError
from tests.guest.fake_configfs import FakeTsmConfigFs

# sev 6.3 AttestationReport fields, in declaration (= serialisation) order
FIELDS = [
    "version", "guest_svn", "policy", "family_id", "image_id", "vmpl", "sig_algo",
    "current_tcb", "plat_info", "key_info", "report_data", "measurement", "host_data",
    "id_key_digest", "author_key_digest", "report_id", "report_id_ma", "reported_tcb",
    "cpuid_fam_id", "cpuid_mod_id", "cpuid_step", "chip_id", "committed_tcb", "current",
    "committed", "launch_tcb", "launch_mit_vector", "current_mit_vector", "signature",
]  # fmt: skip

ARK = "c0b406a4-a803-4952-9743-3fb6014cd0ae"
VCEK = "63da758d-e664-4564-adc5-f4b93be8accd"
ASK = "4ab7b379-bbac-4fe4-a02f-05aef327c782"


def fill(n: int, start: int) -> bytes:
    return bytes((start + i) % 256 for i in range(n))


def build_report(
    version: int, *, chip_id: bytes, cpuid: tuple[int, int, int] = (0, 0, 0), report_data: bytes
) -> bytes:
    """A report laid out by the ATTESTATION_REPORT table of the SEV-SNP ABI spec."""
    r = bytearray(1184)
    struct.pack_into("<IIQ", r, 0x00, version, 7, 0x30000)  # version, guest_svn, policy
    r[0x10:0x20] = fill(16, 0x10)  # family_id
    r[0x20:0x30] = fill(16, 0x20)  # image_id
    struct.pack_into("<II", r, 0x30, 0, 1)  # vmpl, sig_algo (ECDSA P-384 SHA-384)
    r[0x38:0x40] = bytes([1, 2, 3, 4, 5, 6, 7, 8])  # current_tcb
    struct.pack_into("<QI", r, 0x40, 0x25, 0x1)  # platform_info, key_info (author_key_en)
    r[0x50:0x90] = report_data
    r[0x90:0xC0] = fill(48, 0x90)  # measurement
    r[0xC0:0xE0] = fill(32, 0xC0)  # host_data
    r[0xE0:0x110] = fill(48, 0xE0)  # id_key_digest
    r[0x110:0x140] = fill(48, 0x11)  # author_key_digest
    r[0x140:0x160] = fill(32, 0x40)  # report_id
    r[0x160:0x180] = fill(32, 0x60)  # report_id_ma
    r[0x180:0x188] = bytes([11, 12, 13, 14, 15, 16, 17, 18])  # reported_tcb
    r[0x188:0x18B] = bytes(cpuid)  # cpuid_fam_id, cpuid_mod_id, cpuid_step (v3+)
    r[0x1A0:0x1E0] = chip_id
    r[0x1E0:0x1E8] = bytes([21, 22, 23, 24, 25, 26, 27, 28])  # committed_tcb
    r[0x1E8:0x1EB] = bytes([9, 55, 1])  # current build, minor, major
    r[0x1EC:0x1EF] = bytes([8, 54, 1])  # committed build, minor, major
    r[0x1F0:0x1F8] = bytes([31, 32, 33, 34, 35, 36, 37, 38])  # launch_tcb
    struct.pack_into("<QQ", r, 0x1F8, 0xAA, 0xBB)  # launch/current_mit_vector (v5+)
    r[0x2A0:0x2E8] = fill(72, 0xA0)  # signature r
    r[0x2E8:0x330] = fill(72, 0xE8)  # signature s
    r[0x330:0x4A0] = b"\xff" * 0x170  # signature reserved: never serialised
    return bytes(r)


def test_v2_genoa_report_serialises_like_the_sev_crate() -> None:
    data = fill(64, 0x50)
    out = report_json(build_report(2, chip_id=fill(64, 0x1A), report_data=data))
    assert list(out) == FIELDS
    assert out["version"] == 2 and out["guest_svn"] == 7 and out["policy"] == 0x30000
    assert out["family_id"] == list(range(0x10, 0x20))
    assert out["vmpl"] == 0 and out["sig_algo"] == 1
    legacy = {"fmc": None, "bootloader": 1, "tee": 2, "snp": 7, "microcode": 8}
    assert out["current_tcb"] == legacy
    assert out["reported_tcb"] == {"fmc": None, "bootloader": 11, "tee": 12, "snp": 17,
                                   "microcode": 18}  # fmt: skip
    assert out["plat_info"] == 0x25 and out["key_info"] == 1
    assert out["report_data"] == list(data)
    assert out["measurement"] == list(fill(48, 0x90))
    assert out["host_data"] == list(fill(32, 0xC0))
    assert out["author_key_digest"] == list(fill(48, 0x11))
    assert out["report_id_ma"] == list(fill(32, 0x60))
    assert out["cpuid_fam_id"] is None and out["cpuid_step"] is None
    assert out["chip_id"] == list(fill(64, 0x1A))
    assert out["current"] == {"major": 1, "minor": 55, "build": 9}
    assert out["committed"] == {"major": 1, "minor": 54, "build": 8}
    assert out["launch_tcb"]["snp"] == 37
    assert out["launch_mit_vector"] is None and out["current_mit_vector"] is None
    assert out["signature"] == {"r": list(fill(72, 0xA0)), "s": list(fill(72, 0xE8))}


def test_turin_tcb_layout_and_v5_fields() -> None:
    turin_chip = fill(8, 1) + bytes(56)
    out = report_json(build_report(5, chip_id=turin_chip, cpuid=(0x1A, 0x02, 1),
                                   report_data=bytes(64)))  # fmt: skip
    assert out["current_tcb"] == {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 8}
    assert (out["cpuid_fam_id"], out["cpuid_mod_id"], out["cpuid_step"]) == (0x1A, 2, 1)
    assert (out["launch_mit_vector"], out["current_mit_vector"]) == (0xAA, 0xBB)
    # a v2 report whose CHIP_ID has only 8 bytes set is Turin too
    v2 = report_json(build_report(2, chip_id=turin_chip, report_data=bytes(64)))
    assert v2["committed_tcb"]["fmc"] == 21


def test_v3_milan_and_unparseable_reports() -> None:
    milan = report_json(build_report(3, chip_id=fill(64, 3), cpuid=(0x19, 0x01, 1),
                                     report_data=bytes(64)))  # fmt: skip
    assert milan["current_tcb"]["fmc"] is None and milan["launch_mit_vector"] is None
    with pytest.raises(AttesterError, match="chip id is masked"):
        report_json(build_report(2, chip_id=bytes(64), report_data=bytes(64)))
    with pytest.raises(AttesterError, match="unknown SEV-SNP cpu family"):
        report_json(build_report(3, chip_id=fill(64, 3), cpuid=(0x17, 0x31, 0),
                                 report_data=bytes(64)))  # fmt: skip
    with pytest.raises(AttesterError, match="unsupported version 1"):
        report_json(build_report(1, chip_id=fill(64, 3), report_data=bytes(64)))
    with pytest.raises(AttesterError, match="1000 bytes"):
        report_json(bytes(1000))


def cert_table(entries: list[tuple[str, bytes]]) -> bytes:
    header = 24 * (len(entries) + 1)
    table, blobs = b"", b""
    for guid, blob in entries:
        table += uuid.UUID(guid).bytes + struct.pack("<II", header + len(blobs), len(blob))
        blobs += blob
    return table + bytes(24) + blobs


def test_cert_table_is_parsed_and_sorted_as_the_crate_sorts() -> None:
    other = "11111111-2222-3333-4444-555555555555"
    table = cert_table([(ASK, b"ask"), (other, b"x"), (VCEK, b"vcek"), (ARK, b"ark")])
    assert cert_chain_json(table) == [
        {"cert_type": "ARK", "data": list(b"ark")},
        {"cert_type": "VCEK", "data": list(b"vcek")},
        {"cert_type": "ASK", "data": list(b"ask")},
        {"cert_type": {"OTHER": other}, "data": [ord("x")]},
    ]
    assert cert_chain_json(b"") is None
    assert cert_chain_json(bytes(24)) == []
    with pytest.raises(AttesterError, match="past its end"):
        cert_chain_json(cert_table([(VCEK, b"vcek")])[:-2])


class FakeSnpConfigFs(FakeTsmConfigFs):
    """configfs-tsm with the ``sev_guest`` provider: outblob is a report holding inblob."""

    def __init__(self, host_data: bytes, certs: bytes) -> None:
        super().__init__("sev_guest")
        self.host_data = host_data
        self.certs = certs

    def write(self, path: Path, data: bytes) -> None:
        super().write(path, data)
        if path.name == "inblob":
            report = bytearray(build_report(2, chip_id=fill(64, 0x1A), report_data=data))
            report[0xC0:0xE0] = self.host_data
            (path.parent / "outblob").write_bytes(bytes(report))
            (path.parent / "auxblob").write_bytes(self.certs)


def snp_tsm(tmp_path: Path, host_data: bytes, certs: bytes = b"") -> TsmReports:
    root = tmp_path / "tsm/report"
    root.mkdir(parents=True)
    return TsmReports(root, fs=FakeSnpConfigFs(host_data, certs))


async def test_evidence_from_configfs_tsm(tmp_path: Path) -> None:
    certs = cert_table([(VCEK, b"vcek-der")])
    attester = SnpAttester(snp_tsm(tmp_path, bytes(32), certs))
    evidence = await attester.evidence(b"\x42" * 48)
    assert list(evidence) == ["attestation_report", "cert_chain"]
    assert evidence["attestation_report"]["report_data"] == [0x42] * 48 + [0] * 16
    assert evidence["cert_chain"] == [{"cert_type": "VCEK", "data": list(b"vcek-der")}]
    with pytest.raises(AttesterError, match="no more than 64 bytes"):
        await attester.evidence(bytes(65))


async def test_host_data_binding(tmp_path: Path) -> None:
    digest = fill(48, 0x99)  # sha384: upstream compares its first 32 bytes
    attester = SnpAttester(snp_tsm(tmp_path / "a", digest[:32]))
    assert (await attester.bind_init_data(digest)).value == "ok"
    short = fill(20, 5)  # shorter digests are zero-padded
    assert await SnpAttester(snp_tsm(tmp_path / "b", short + bytes(12))).bind_init_data(short)
    with pytest.raises(AttesterError, match="HOSTDATA does not match"):
        await attester.bind_init_data(fill(48, 0x98))


class FakeSevGuest:
    """The kernel's /dev/sev-guest: SNP_GET_REPORT, and SNP_GET_EXT_REPORT with the host's
    certificate table (EIO + SNP_GUEST_VMM_ERR_INVALID_LEN when the buffer is too small)."""

    def __init__(self, certs: bytes) -> None:
        self.certs = certs
        self.calls: list[tuple[int, bytes, int]] = []

    def __call__(self, fd: int, request: int, buffer: bytearray) -> None:
        _, req, resp, _ = ioctl.SNP_REQUEST.unpack(buffer)
        if request == ioctl.SNP_GET_EXT_REPORT:
            raw = ctypes.string_at(req, ioctl.SNP_EXT_REPORT_REQ.size)
            user_data, vmpl, certs_address, certs_len = ioctl.SNP_EXT_REPORT_REQ.unpack(raw)
            self.calls.append((request, user_data, certs_len))
            if certs_len < len(self.certs):
                needed = -(-len(self.certs) // 4096) * 4096
                new = ioctl.SNP_EXT_REPORT_REQ.pack(user_data, vmpl, certs_address, needed)
                ctypes.memmove(req, new, len(new))
                buffer[24:32] = (1 << 32).to_bytes(8, "little")
                raise OSError(errno.EIO, "Input/output error")
            ctypes.memmove(certs_address, self.certs, len(self.certs))
        else:
            assert request == ioctl.SNP_GET_REPORT
            user_data, vmpl = ioctl.SNP_REPORT_REQ.unpack(ctypes.string_at(req, 96))
            self.calls.append((request, user_data, 0))
        assert vmpl == 0
        report = build_report(3, chip_id=fill(64, 1), cpuid=(0x19, 0x11, 1), report_data=user_data)
        message = struct.pack("=II24x", 0, len(report)) + report
        ctypes.memmove(resp, message, len(message))


def test_ext_report_request_number() -> None:
    assert ioctl.SNP_GET_EXT_REPORT == 0xC0205302 and ioctl.SNP_EXT_REPORT_REQ.size == 112


async def test_ioctl_fallback_without_configfs_tsm(tmp_path: Path) -> None:
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    driver = FakeSevGuest(bytes(4096))  # the host has no certificates: an all-zero table
    attester = SnpAttester(TsmReports(tmp_path / "missing"), device=device, ioctl_call=driver)
    evidence = await attester.evidence(b"\x01\x02")
    assert driver.calls == [(ioctl.SNP_GET_EXT_REPORT, b"\x01\x02" + bytes(62), 4 * 4096)]
    assert evidence["cert_chain"] is None
    assert evidence["attestation_report"]["current_tcb"]["fmc"] is None  # Genoa
    assert evidence["attestation_report"]["report_data"][:3] == [1, 2, 0]


async def test_ext_report_carries_the_host_certificate_chain(tmp_path: Path) -> None:
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    vcek, ask, ark = b"V" * 1400, b"A" * 1600, b"R" * 1500
    table = cert_table([(VCEK, vcek), (ASK, ask), (ARK, ark)])
    driver = FakeSevGuest(table + bytes(5 * 4096 - len(table)))  # needs five pages
    attester = SnpAttester(TsmReports(tmp_path / "missing"), device=device, ioctl_call=driver)
    evidence = await attester.evidence(b"\x09")
    assert [call[2] for call in driver.calls] == [4 * 4096, 5 * 4096]  # grown as asked
    assert evidence["cert_chain"] == [
        {"cert_type": "ARK", "data": list(ark)},
        {"cert_type": "VCEK", "data": list(vcek)},
        {"cert_type": "ASK", "data": list(ask)},
    ]
    host_data = build_report(3, chip_id=fill(64, 1), cpuid=(0x19, 0x11, 1), report_data=bytes(64))[
        0xC0:0xE0
    ]
    assert await attester.bind_init_data(host_data) is InitDataResult.OK
    assert driver.calls[-1][0] == ioctl.SNP_GET_REPORT  # HOSTDATA: the plain report


def test_ext_report_errors(tmp_path: Path) -> None:
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")

    def busy(fd: int, request: int, buffer: bytearray) -> None:
        buffer[24:32] = (2 << 32).to_bytes(8, "little")
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(AttesterError, match="exitinfo2=0x200000000"):
        ioctl.snp_ext_report(device=device, ioctl=busy)

    def absurd(fd: int, request: int, buffer: bytearray) -> None:
        req = ioctl.SNP_REQUEST.unpack(buffer)[1]
        raw = ctypes.string_at(req, ioctl.SNP_EXT_REPORT_REQ.size)
        user_data, vmpl, address, _ = ioctl.SNP_EXT_REPORT_REQ.unpack(raw)
        new = ioctl.SNP_EXT_REPORT_REQ.pack(user_data, vmpl, address, 1 << 30)
        ctypes.memmove(req, new, len(new))
        buffer[24:32] = (1 << 32).to_bytes(8, "little")
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(AttesterError, match="bad certificate length"):
        ioctl.snp_ext_report(device=device, ioctl=absurd)
