"""AMD SEV-SNP: evidence ``{"attestation_report", "cert_chain"}`` as guest-components sends it.

The report comes from configfs-tsm (provider ``sev_guest``, certificates in ``auxblob``) or,
without it, from the ``/dev/sev-guest`` SNP_GET_EXT_REPORT ioctl as upstream (the host's
certificate table; none: ``cert_chain`` is null, and the verifier fetches the VCEK itself).
VMPL 0 as upstream.
Initdata binding: HOST_DATA must equal the initdata digest truncated or zero-padded to 32
bytes (upstream's ``pad::<32>``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from guest.attesters import ioctl
from guest.attesters.base import SNP, InitDataResult, NoRuntimeMeasurement, pad
from guest.attesters.snp_report import HOST_DATA, cert_chain_json, report_json
from guest.attesters.tsm import TsmReports
from guest.errors import AttesterError

SEV_GUEST_DEVICE = ioctl.SEV_GUEST_DEVICE
REPORT_DATA_SIZE = 64
HOST_DATA_SIZE = 32


class SnpAttester(NoRuntimeMeasurement):
    tee = SNP

    def __init__(
        self,
        tsm: TsmReports,
        *,
        device: Path = SEV_GUEST_DEVICE,
        ioctl_call: ioctl.Ioctl | None = None,
    ) -> None:
        self.tsm = tsm
        self.device = device
        self.ioctl_call = ioctl_call

    async def evidence(self, report_data: bytes) -> Any:
        if len(report_data) > REPORT_DATA_SIZE:
            raise AttesterError(
                f"SNP Attester: Report data must be no more than {REPORT_DATA_SIZE} bytes"
            )
        raw, certs = await asyncio.to_thread(
            self._report, pad(report_data, REPORT_DATA_SIZE), with_certs=True
        )
        return {
            "attestation_report": report_json(raw),
            "cert_chain": cert_chain_json(certs) if certs is not None else None,
        }

    def _report(self, report_data: bytes, *, with_certs: bool) -> tuple[bytes, bytes | None]:
        """The raw report and the certificate table, if the platform gave one: configfs-tsm
        (``auxblob``), else SNP_GET_EXT_REPORT as upstream (SNP_GET_REPORT for HOSTDATA)."""
        if self.tsm.available():
            report = self.tsm.report(report_data, wanted=SNP, aux=with_certs)
            return report.outblob, report.auxblob or None
        call = self.ioctl_call or ioctl.default_ioctl
        if with_certs:
            return ioctl.snp_ext_report(report_data, vmpl=0, device=self.device, ioctl=call)
        return ioctl.snp_report(report_data, vmpl=0, device=self.device, ioctl=call), None

    async def bind_init_data(self, digest: bytes) -> InitDataResult:
        raw, _ = await asyncio.to_thread(self._report, bytes(REPORT_DATA_SIZE), with_certs=False)
        if len(raw) < HOST_DATA.stop:
            raise AttesterError("Get HOSTDATA failed: short attestation report")
        if raw[HOST_DATA] != pad(digest, HOST_DATA_SIZE):
            raise AttesterError("HOSTDATA does not match.")
        return InitDataResult.OK
