"""Intel TDX: the quote from configfs-tsm, evidence ``{"cc_eventlog", "quote"}``."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from guest.attesters import ioctl
from guest.attesters.base import TDX, InitDataResult, pad
from guest.attesters.tsm import TsmReports
from guest.errors import AttesterError

CCEL_PATH = Path("/sys/firmware/acpi/tables/data/CCEL")
TDX_GUEST_DEVICE = ioctl.TDX_GUEST_DEVICE
REPORT_DATA_SIZE = 64


class TdxAttester:
    tee = TDX

    def __init__(
        self,
        tsm: TsmReports,
        *,
        ccel: Path = CCEL_PATH,
        device: Path = TDX_GUEST_DEVICE,
        ioctl_call: ioctl.Ioctl | None = None,
    ) -> None:
        self.tsm = tsm
        self.ccel = ccel
        self.device = device
        self.ioctl_call = ioctl_call

    async def evidence(self, report_data: bytes) -> Any:
        if len(report_data) > REPORT_DATA_SIZE:
            raise AttesterError(
                f"TDX Attester: Report data must be no more than {REPORT_DATA_SIZE} bytes"
            )
        inblob = pad(report_data, REPORT_DATA_SIZE)
        report = await asyncio.to_thread(self.tsm.report, inblob, wanted=TDX)
        eventlog = await asyncio.to_thread(self._eventlog)
        return {"cc_eventlog": eventlog, "quote": base64.b64encode(report.outblob).decode()}

    def _eventlog(self) -> str | None:
        try:
            return base64.b64encode(self.ccel.read_bytes()).decode()
        except FileNotFoundError:
            return None

    async def bind_init_data(self, digest: bytes) -> InitDataResult:
        """MRCONFIGID (from the TDREPORT ioctl) must equal the digest padded to 48 bytes."""
        call = self.ioctl_call or ioctl.default_ioctl
        report = await asyncio.to_thread(
            ioctl.tdx_report, bytes(64), device=self.device, ioctl=call
        )
        if report[ioctl.MRCONFIGID] != pad(digest, 48):
            raise AttesterError("TDX Attester: MRCONFIGID does not match the initdata digest")
        return InitDataResult.OK

    def supports_runtime_measurement(self) -> bool:
        return False
