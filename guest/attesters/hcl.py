"""Azure's HCL (paravisor) attestation report, as ``az-cvm-vtpm``'s ``hcl`` module reads it.

The vTPM keeps it in NV index ``0x01400001``. Layout (little-endian, ``repr(C)``)::

    0     header       8 x u32 (signature, version, report_size, request_type, status, 3 reserved)
    32    hw_report    1184 bytes: the SNP report (1184) or the TDX TDREPORT (first 1024)
    1216  hcl_data     5 x u32 (data_size, version, report_type, report_data_hash_type,
                       variable_data_size)
    1236  variable data (JSON with the vTPM's AK public key, ``kid`` ``HCLAkPub``)

``report_type`` 2 is SNP, 4 is TDX. The hardware report's report_data starts with
``sha256(variable data)``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from guest.errors import AttesterError

HW_REPORT_OFFSET = 32
SNP_REPORT_SIZE = 1184
TD_REPORT_SIZE = 1024
HCL_DATA_OFFSET = HW_REPORT_OFFSET + max(SNP_REPORT_SIZE, TD_REPORT_SIZE)
VAR_DATA_OFFSET = HCL_DATA_OFFSET + 20
SNP_REPORT_TYPE = 2
TDX_REPORT_TYPE = 4
REPORT_TYPES = {SNP_REPORT_TYPE: "snp", TDX_REPORT_TYPE: "tdx"}


@dataclass(frozen=True, slots=True)
class HclReport:
    raw: bytes
    report_type: str  # "snp" | "tdx"
    var_data: bytes

    @property
    def hw_report(self) -> bytes:
        size = SNP_REPORT_SIZE if self.report_type == "snp" else TD_REPORT_SIZE
        return self.raw[HW_REPORT_OFFSET : HW_REPORT_OFFSET + size]


def parse(raw: bytes) -> HclReport:
    """Raises :class:`AttesterError` for a report too short or of an unknown type."""
    if len(raw) < VAR_DATA_OFFSET:
        raise AttesterError("invalid report size")
    _, _, report_type, _, var_size = struct.unpack_from("<5I", raw, HCL_DATA_OFFSET)
    if len(raw) < VAR_DATA_OFFSET + var_size:
        raise AttesterError("invalid report size")
    kind = REPORT_TYPES.get(report_type)
    if kind is None:
        raise AttesterError("invalid report type")
    return HclReport(raw, kind, raw[VAR_DATA_OFFSET : VAR_DATA_OFFSET + var_size])


def build(report_type: int, hw_report: bytes, var_data: bytes) -> bytes:
    """An HCL report with this content (what the paravisor writes; used to provision tests)."""
    header = struct.pack("<8I", 0x414C4348, 1, SNP_REPORT_SIZE, 2, 0, 0, 0, 0)  # "HCLA"
    body = hw_report.ljust(HCL_DATA_OFFSET - HW_REPORT_OFFSET, b"\0")
    hcl_data = struct.pack("<5I", 20 + len(var_data), 1, report_type, 1, len(var_data))
    return header + body + hcl_data + var_data
