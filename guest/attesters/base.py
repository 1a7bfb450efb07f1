"""What every attester offers, and the TEE names of kbs-types."""

from __future__ import annotations

import enum
from typing import Any, Protocol

from guest.errors import AttesterError

# kbs-types ``Tee`` serialisation (PROTOCOLS.md §4.2)
SAMPLE = "sample"
TDX = "tdx"
SNP = "snp"


class InitDataResult(enum.Enum):
    OK = "ok"
    UNSUPPORTED = "unsupported"


class MeasurementRegister(Protocol):
    """A TEE's runtime measurement registers, addressed by TCG PCR index (upstream's API)."""

    def supports_runtime_measurement(self) -> bool: ...

    def ccel_hash_algorithm(self) -> str:
        """The kbs-types hash algorithm name of the platform's CC event log."""
        ...

    def pcr_to_ccmr(self, pcr: int) -> int: ...

    async def get_runtime_measurement(self, pcr: int) -> bytes: ...

    async def extend_runtime_measurement(self, event_digest: bytes, pcr: int) -> None: ...


class Attester(MeasurementRegister, Protocol):
    """One TEE. ``evidence`` returns the JSON value sent as ``primary_evidence``."""

    tee: str

    async def evidence(self, report_data: bytes) -> Any: ...

    async def bind_init_data(self, digest: bytes) -> InitDataResult: ...


class NoRuntimeMeasurement:
    """For TEEs without a runtime measurement register (upstream's default trait methods)."""

    def supports_runtime_measurement(self) -> bool:
        return False

    def ccel_hash_algorithm(self) -> str:
        raise AttesterError("The Attester does not support runtime measurement")

    def pcr_to_ccmr(self, pcr: int) -> int:
        raise AttesterError("The Attester does not support runtime measurement")

    async def get_runtime_measurement(self, pcr: int) -> bytes:
        raise AttesterError("The Attester does not support getting runtime measurement")

    async def extend_runtime_measurement(self, event_digest: bytes, pcr: int) -> None:
        raise AttesterError("The Attester does not support extending runtime measurement")


def pad(data: bytes, size: int) -> bytes:
    """Zero-pad at the end to ``size``, or truncate (upstream's ``pad``)."""
    return data[:size].ljust(size, b"\0")
