"""The SEV-SNP ATTESTATION_REPORT (1184 bytes) and its JSON form.

The JSON form is what guest-components' SNP attester sends: the ``AttestationReport`` of the
``sev`` crate (6.3) through serde. Byte arrays are JSON arrays of numbers; ``policy``,
``plat_info`` and ``key_info`` are the raw integers (bitfield newtypes); a TCB version is
``{"fmc","bootloader","tee","snp","microcode"}`` with ``fmc`` only on Turin; the CPUID
fields are null before report version 3 and the mitigation vectors before version 5.
The certificate table (from ``auxblob`` or the extended report) becomes ``cert_chain``.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

from guest.errors import AttesterError

REPORT_LEN = 1184
REPORT_DATA = slice(0x50, 0x90)
HOST_DATA = slice(0xC0, 0xE0)
CHIP_ID = slice(0x1A0, 0x1E0)
CPUID_FAMILY, CPUID_MODEL, CPUID_STEP = 0x188, 0x189, 0x18A

# name, offset, length of the plain byte arrays, in the crate's field order
_ARRAYS_HEAD = (("family_id", 0x10, 16), ("image_id", 0x20, 16))
_ARRAYS_MID = (
    ("report_data", 0x50, 64),
    ("measurement", 0x90, 48),
    ("host_data", 0xC0, 32),
    ("id_key_digest", 0xE0, 48),
    ("author_key_digest", 0x110, 48),
    ("report_id", 0x140, 32),
    ("report_id_ma", 0x160, 32),
)
SIGNATURE = 0x2A0
SIGNATURE_COMPONENT = 72

MILAN, GENOA, TURIN = "milan", "genoa", "turin"

# sev::firmware::host::CertType: the GUIDs of the certificate table, in the crate's sort order
CERT_TYPES = {
    "c0b406a4-a803-4952-9743-3fb6014cd0ae": "ARK",
    "63da758d-e664-4564-adc5-f4b93be8accd": "VCEK",
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1": "VLEK",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782": "ASK",
    "92f81bc3-5811-4d3d-97ff-d19f88dc67ea": "CRL",
}
_CERT_ORDER = {name: rank for rank, name in enumerate(CERT_TYPES.values())}
_CERT_ENTRY = struct.Struct("<16sII")


def _u32(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 4], "little")


def _u64(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 8], "little")


def _array(raw: bytes, offset: int, length: int) -> list[int]:
    return list(raw[offset : offset + length])


def identify_cpu(family: int, model: int) -> str:
    """``sev::Generation::identify_cpu``."""
    if family == 0x19 and model <= 0x0F:
        return MILAN
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return GENOA
    if family == 0x1A and model <= 0x11:
        return TURIN
    raise AttesterError(
        f"Failed to parse attestation report: unknown SEV-SNP cpu family {family:#x} "
        f"model {model:#x}"
    )


def generation(raw: bytes) -> str:
    """The processor generation, which decides the TCB_VERSION layout."""
    version = _u32(raw, 0)
    if version < 2:
        raise AttesterError(f"Failed to parse attestation report: unsupported version {version}")
    if version == 2:
        chip_id = raw[CHIP_ID]
        if chip_id == bytes(64):
            raise AttesterError("Failed to parse attestation report: chip id is masked")
        return TURIN if chip_id[8:] == bytes(56) else GENOA
    return identify_cpu(raw[CPUID_FAMILY], raw[CPUID_MODEL])


def tcb_version(raw: bytes, offset: int, gen: str) -> dict[str, int | None]:
    b = raw[offset : offset + 8]
    if gen == TURIN:
        return {"fmc": b[0], "bootloader": b[1], "tee": b[2], "snp": b[3], "microcode": b[7]}
    return {"fmc": None, "bootloader": b[0], "tee": b[1], "snp": b[6], "microcode": b[7]}


def _version(raw: bytes, offset: int) -> dict[str, int]:
    build, minor, major = raw[offset : offset + 3]
    return {"major": major, "minor": minor, "build": build}


def report_json(raw: bytes) -> dict[str, Any]:
    """The serde JSON of ``sev::firmware::guest::AttestationReport::from_bytes(raw)``."""
    if len(raw) != REPORT_LEN:
        raise AttesterError(
            f"Failed to parse attestation report: {len(raw)} bytes, expected {REPORT_LEN}"
        )
    gen = generation(raw)
    version = _u32(raw, 0)
    out: dict[str, Any] = {"version": version, "guest_svn": _u32(raw, 4), "policy": _u64(raw, 8)}
    out.update((name, _array(raw, off, n)) for name, off, n in _ARRAYS_HEAD)
    out["vmpl"] = _u32(raw, 0x30)
    out["sig_algo"] = _u32(raw, 0x34)
    out["current_tcb"] = tcb_version(raw, 0x38, gen)
    out["plat_info"] = _u64(raw, 0x40)
    out["key_info"] = _u32(raw, 0x48)
    out.update((name, _array(raw, off, n)) for name, off, n in _ARRAYS_MID)
    out["reported_tcb"] = tcb_version(raw, 0x180, gen)
    has_cpuid = version >= 3
    out["cpuid_fam_id"] = raw[CPUID_FAMILY] if has_cpuid else None
    out["cpuid_mod_id"] = raw[CPUID_MODEL] if has_cpuid else None
    out["cpuid_step"] = raw[CPUID_STEP] if has_cpuid else None
    out["chip_id"] = list(raw[CHIP_ID])
    out["committed_tcb"] = tcb_version(raw, 0x1E0, gen)
    out["current"] = _version(raw, 0x1E8)
    out["committed"] = _version(raw, 0x1EC)
    out["launch_tcb"] = tcb_version(raw, 0x1F0, gen)
    has_mit = version >= 5
    out["launch_mit_vector"] = _u64(raw, 0x1F8) if has_mit else None
    out["current_mit_vector"] = _u64(raw, 0x200) if has_mit else None
    out["signature"] = {
        "r": _array(raw, SIGNATURE, SIGNATURE_COMPONENT),
        "s": _array(raw, SIGNATURE + SIGNATURE_COMPONENT, SIGNATURE_COMPONENT),
    }
    return out


def cert_chain_json(table: bytes) -> list[dict[str, Any]] | None:
    """The serde JSON of the crate's ``Vec<CertTableEntry>``, sorted as the crate sorts it.

    The table is the GHCB certificate table: ``(guid, offset, length)`` entries up to an
    all-zero GUID, offsets counted from the start of the table. No table at all: None.
    """
    if not table:
        return None
    entries: list[tuple[tuple[int, str], dict[str, Any]]] = []
    for start in range(0, len(table) - _CERT_ENTRY.size + 1, _CERT_ENTRY.size):
        guid_bytes, offset, length = _CERT_ENTRY.unpack_from(table, start)
        if guid_bytes == bytes(16):
            break
        if offset + length > len(table):
            raise AttesterError("SNP certificate table entry points past its end")
        guid = str(uuid.UUID(bytes=guid_bytes))
        name = CERT_TYPES.get(guid)
        cert_type: Any = name if name else {"OTHER": guid}
        rank = (_CERT_ORDER[name], "") if name else (len(_CERT_ORDER), guid)
        data = list(table[offset : offset + length])
        entries.append((rank, {"cert_type": cert_type, "data": data}))
    entries.sort(key=lambda item: item[0])
    return [entry for _, entry in entries]
