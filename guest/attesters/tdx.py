"""Intel TDX: the quote from configfs-tsm, evidence ``{"cc_eventlog", "quote"}``.

Runtime measurement and MRCONFIGID as upstream: through the tdx_guest sysfs measurements
(``rtmr<N>:sha384``, kernel >= 6.16) where present; MRCONFIGID and RTMR reads otherwise from
the TDREPORT ioctl. Extending an RTMR needs the sysfs files (upstream's other way is libtdx).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from guest.attesters import ioctl
from guest.attesters.base import TDX, InitDataResult, pad
from guest.attesters.ccel import AAEL_PATH, CCEL_PATH, read_eventlog
from guest.attesters.tsm import TsmReports
from guest.errors import AttesterError

TDX_GUEST_DEVICE = ioctl.TDX_GUEST_DEVICE
MEASUREMENTS_PATH = Path("/sys/devices/virtual/misc/tdx_guest/measurements")
REPORT_DATA_SIZE = 64
REGISTER_SIZE = 48


class TdxAttester:
    tee = TDX

    def __init__(
        self,
        tsm: TsmReports,
        *,
        ccel: Path = CCEL_PATH,
        aael: Path = AAEL_PATH,
        device: Path = TDX_GUEST_DEVICE,
        ioctl_call: ioctl.Ioctl | None = None,
        measurements: Path = MEASUREMENTS_PATH,
    ) -> None:
        self.tsm = tsm
        self.measurements = measurements
        self.ccel = ccel
        self.aael = aael
        self.device = device
        self.ioctl_call = ioctl_call

    async def evidence(self, report_data: bytes) -> Any:
        if len(report_data) > REPORT_DATA_SIZE:
            raise AttesterError(
                f"TDX Attester: Report data must be no more than {REPORT_DATA_SIZE} bytes"
            )
        inblob = pad(report_data, REPORT_DATA_SIZE)
        report = await asyncio.to_thread(self.tsm.report, inblob, wanted=TDX)
        eventlog = await asyncio.to_thread(read_eventlog, self.ccel, self.aael)
        return {"cc_eventlog": eventlog, "quote": base64.b64encode(report.outblob).decode()}

    def _tdreport(self) -> bytes:
        call = self.ioctl_call or ioctl.default_ioctl
        return ioctl.tdx_report(bytes(64), device=self.device, ioctl=call)

    def _sysfs(self) -> bool:
        return self.measurements.is_dir()

    async def bind_init_data(self, digest: bytes) -> InitDataResult:
        """MRCONFIGID must equal the digest zero-padded to 48 bytes."""
        if self._sysfs():
            mrconfigid = await asyncio.to_thread((self.measurements / "mrconfigid").read_bytes)
        else:
            mrconfigid = (await asyncio.to_thread(self._tdreport))[ioctl.MRCONFIGID]
        if mrconfigid != pad(digest, REGISTER_SIZE):
            raise AttesterError("Init data does not match!")
        return InitDataResult.OK

    def supports_runtime_measurement(self) -> bool:
        return self._sysfs()

    def ccel_hash_algorithm(self) -> str:
        return "sha384"

    def pcr_to_ccmr(self, pcr: int) -> int:
        """TD-shim / UEFI CC mapping: MRTD is CC MR 0, RTMR<n> is CC MR n+1."""
        if pcr in (1, 7):
            return 1
        if 2 <= pcr <= 6:
            return 2
        if 8 <= pcr <= 15:
            return 3
        return 4

    def _rtmr_path(self, pcr: int) -> Path:
        return self.measurements / f"rtmr{self.pcr_to_ccmr(pcr) - 1}:sha384"

    async def get_runtime_measurement(self, pcr: int) -> bytes:
        if self._sysfs():
            return await asyncio.to_thread(self._rtmr_path(pcr).read_bytes)
        index = self.pcr_to_ccmr(pcr) - 1
        report = await asyncio.to_thread(self._tdreport)
        return report[ioctl.rtmr_slice(index)]

    async def extend_runtime_measurement(self, event_digest: bytes, pcr: int) -> None:
        if not self._sysfs():
            raise AttesterError("TDX Attester: extending an RTMR needs the sysfs measurements")
        path = self._rtmr_path(pcr)
        try:
            await asyncio.to_thread(path.write_bytes, pad(event_digest, REGISTER_SIZE))
        except OSError as exc:
            raise AttesterError(f"Failed to write RTMR via sysfs: {exc}") from exc
