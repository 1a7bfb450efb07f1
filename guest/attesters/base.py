"""What every attester offers, and the TEE names of kbs-types."""

from __future__ import annotations

import enum
from typing import Any, Protocol

# kbs-types ``Tee`` serialisation (PROTOCOLS.md §4.2)
SAMPLE = "sample"
TDX = "tdx"
SNP = "snp"


class InitDataResult(enum.Enum):
    OK = "ok"
    UNSUPPORTED = "unsupported"


class Attester(Protocol):
    """One TEE. ``evidence`` returns the JSON value sent as ``primary_evidence``."""

    tee: str

    async def evidence(self, report_data: bytes) -> Any: ...

    async def bind_init_data(self, digest: bytes) -> InitDataResult: ...

    def supports_runtime_measurement(self) -> bool: ...


def pad(data: bytes, size: int) -> bytes:
    """Zero-pad at the end to ``size``, or truncate (upstream's ``pad``)."""
    return data[:size].ljust(size, b"\0")
