"""Azure confidential VMs: ``az-snp-vtpm`` and ``az-tdx-vtpm``, the paravisor's vTPM.

Evidence as guest-components serialises it (``EVIDENCE_VERSION`` 2)::

    {"version": 2,
     "tpm_quote": {"signature": hex, "message": hex, "pcrs": [hex x 24]},
     "hcl_report": urlsafe-b64,
     "vcek": urlsafe-b64 (DER)}         # az-snp-vtpm
     "td_quote": urlsafe-b64}           # az-tdx-vtpm

- ``hcl_report``: the report data is written to NV index ``0x01400002``; the paravisor then
  refreshes the HCL report in ``0x01400001`` (upstream waits 3 s), which is read back.
- ``tpm_quote``: TPM2_Quote with the vTPM AK ``0x81000003`` over PCRs 0-23 (SHA-256), the
  report data as qualifying data, the key's own scheme (RSASSA); ``signature`` is the bare
  RSA signature, ``message`` the marshalled TPMS_ATTEST, ``pcrs`` read right after.
- ``vcek``: from Azure IMDS ``/metadata/THIM/amd/certification`` (PEM, sent as DER).
- ``td_quote``: IMDS ``POST /acc/tdquote`` with the TDREPORT out of the HCL report.

Detection (upstream's ``is_snp_cvm`` / ``is_tdx_cvm``): the HCL report in NV ``0x01400001``
parses and has that report type; any TPM error means "not this platform".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from dataclasses import dataclass
from typing import Any

import aiohttp

from guest.attesters import hcl
from guest.attesters.pcr import PcrRegisters
from guest.attesters.tpmdev import Tpm
from guest.errors import AttesterError
from guest.kbs.http import parse_json, read_limited

log = logging.getLogger(__name__)

AZ_SNP_VTPM = "az-snp-vtpm"
AZ_TDX_VTPM = "az-tdx-vtpm"
EVIDENCE_VERSION = 2
HCL_REPORT_NV_INDEX = 0x01400001
REPORT_DATA_NV_INDEX = 0x01400002
VTPM_AK_HANDLE = 0x81000003
QUOTE_DATA_MAX = 64  # sizeof(TPMU_HA): TPM2B_DATA's limit
IMDS_URL = "http://169.254.169.254"
VCEK_PATH = "/metadata/THIM/amd/certification"
TDQUOTE_PATH = "/acc/tdquote"


@dataclass(frozen=True, slots=True)
class VtpmSettings:
    #: tpm2-tss TCTI; upstream opens ``DeviceConfig::default()``, i.e. /dev/tpm0
    tcti: str = "device:/dev/tpm0"
    imds_url: str = IMDS_URL
    #: how long the paravisor takes to refresh the HCL report after a report-data write
    report_settle: float = 3.0


def detect(tpm: Tpm) -> str | None:
    """``az-snp-vtpm``, ``az-tdx-vtpm`` or None, from the HCL report's type (blocking)."""
    try:
        report = hcl.parse(tpm.nv_read(HCL_REPORT_NV_INDEX))
    except AttesterError as exc:
        log.debug("Failed to retrieve Azure HCL data from vTPM: %s", exc)
        return None
    return AZ_SNP_VTPM if report.report_type == "snp" else AZ_TDX_VTPM


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


class _AzVtpm(PcrRegisters):
    """What both Azure vTPM attesters share: the HCL report, the quote, PCR 8."""

    tee: str

    def __init__(self, settings: VtpmSettings = VtpmSettings()) -> None:
        self.settings = settings
        self.tpm = Tpm(settings.tcti)

    async def _hcl_and_quote(self, report_data: bytes) -> tuple[bytes, dict[str, Any]]:
        if len(report_data) > QUOTE_DATA_MAX:
            raise AttesterError("data too large")
        await asyncio.to_thread(self.tpm.nv_write, REPORT_DATA_NV_INDEX, report_data)
        await asyncio.sleep(self.settings.report_settle)
        hcl_report = await asyncio.to_thread(self.tpm.nv_read, HCL_REPORT_NV_INDEX)
        quote = await asyncio.to_thread(
            self.tpm.quote, VTPM_AK_HANDLE, report_data, rsassa_sha256=False
        )
        tpm_quote = {
            "signature": quote.rsa_signature.hex(),
            "message": quote.attest.hex(),
            "pcrs": [pcr.hex() for pcr in quote.pcrs],
        }
        return hcl_report, tpm_quote

    async def _imds(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        url = self.settings.imds_url.rstrip("/") + path
        headers = {"Metadata": "true"}
        try:
            async with aiohttp.ClientSession() as session:
                async with session.request(method, url, headers=headers, **kwargs) as response:
                    body = await read_limited(response)
                    status = response.status
        except aiohttp.ClientError as exc:
            raise AttesterError(f"Azure IMDS {path}: {exc}") from exc
        return status, parse_json(body, f"Azure IMDS {path}") if status < 300 else body


class AzSnpVtpmAttester(_AzVtpm):
    tee = AZ_SNP_VTPM

    async def evidence(self, report_data: bytes) -> Any:
        hcl_report, tpm_quote = await self._hcl_and_quote(report_data)
        status, certs = await self._imds("GET", VCEK_PATH)
        if status >= 300 or not isinstance(certs, dict):
            raise AttesterError(f"Azure IMDS {VCEK_PATH}: HTTP {status}")
        vcek = _pem_to_der(certs.get("vcekCert"))
        return {
            "version": EVIDENCE_VERSION,
            "tpm_quote": tpm_quote,
            "hcl_report": _b64url(hcl_report),
            "vcek": _b64url(vcek),
        }


class AzTdxVtpmAttester(_AzVtpm):
    tee = AZ_TDX_VTPM

    async def evidence(self, report_data: bytes) -> Any:
        hcl_report, tpm_quote = await self._hcl_and_quote(report_data)
        report = hcl.parse(hcl_report)
        if report.report_type != "tdx":
            raise AttesterError("invalid report type")
        td_quote = await self._td_quote(report.hw_report)
        return {
            "version": EVIDENCE_VERSION,
            "tpm_quote": tpm_quote,
            "hcl_report": _b64url(hcl_report),
            "td_quote": _b64url(td_quote),
        }

    async def get_runtime_measurement(self, pcr: int) -> bytes:
        # upstream's az-tdx-vtpm attester has no get_runtime_measurement (issue #1201)
        raise AttesterError("The Attester does not support getting runtime measurement")

    async def _td_quote(self, td_report: bytes) -> bytes:
        """Standard base64 first, then URL-safe without padding (the SDK's fallback)."""
        statuses = []
        for encoded in (
            base64.b64encode(td_report).decode(),
            base64.urlsafe_b64encode(td_report).decode().rstrip("="),
        ):
            status, body = await self._imds("POST", TDQUOTE_PATH, json={"report": encoded})
            if status < 300:
                quote = body.get("quote") if isinstance(body, dict) else None
                if not isinstance(quote, str):
                    raise AttesterError("tdquote success status but missing/invalid JSON")
                return _b64_either(quote)
            statuses.append(str(status))
        raise AttesterError(f"tdquote failed (status {', '.join(statuses)})")


def _b64_either(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        pass
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise AttesterError("unable to base64 decode returned quote") from exc


def _pem_to_der(pem: object) -> bytes:
    """The DER of a single ``CERTIFICATE`` PEM block (upstream's ``pem_rfc7468`` decode)."""
    if not isinstance(pem, str):
        raise AttesterError("Failed to decode VCEK PEM")
    match = _PEM.fullmatch(pem.strip())
    if match is None:
        raise AttesterError("Failed to decode VCEK PEM")
    if match["label"] != "CERTIFICATE":
        raise AttesterError(f"Expected CERTIFICATE label in PEM, got {match['label']}")
    try:
        return base64.b64decode("".join(match["body"].split()), validate=True)
    except binascii.Error as exc:
        raise AttesterError("Failed to decode VCEK PEM") from exc


_PEM = re.compile(
    r"-----BEGIN (?P<label>[A-Z0-9 ]+)-----(?P<body>[A-Za-z0-9+/=\s]*)-----END (?P=label)-----"
)
