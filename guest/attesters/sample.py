"""The ``sample`` attester: upstream's fallback when no TEE is found. Proves nothing."""

from __future__ import annotations

import base64
import logging
from typing import Any

from guest.attesters.base import SAMPLE, InitDataResult, NoRuntimeMeasurement

log = logging.getLogger(__name__)


class SampleAttester(NoRuntimeMeasurement):
    tee = SAMPLE

    async def evidence(self, report_data: bytes) -> Any:
        return {"svn": "1", "report_data": base64.b64encode(report_data).decode()}

    async def bind_init_data(self, digest: bytes) -> InitDataResult:
        log.info("tee=sample: initdata binding is unsupported by the sample attester")
        return InitDataResult.UNSUPPORTED
