"""What the TPM-based attesters share: PCRs as runtime measurement registers, and the
initdata binding in PCR 8.

How PCR 8 is extended only once in a pod VM: process-user-data (``PUD_EXTEND_PCR8``, or the
image's ``tpm2_pcrextend`` unit) extends it at boot, before the attestation-agent starts;
the agent binds initdata only when started with ``-i``/``-t`` (its ttrpc ``BindInitData`` is
not served, as upstream's ttrpc build), and then leaves a PCR 8 that already holds exactly
this digest's single extend alone.
"""

from __future__ import annotations

import asyncio
import logging

from guest.attesters.base import InitDataResult
from guest.attesters.tpmdev import PCR_COUNT, SHA256_SIZE, Tpm, expected_extend
from guest.errors import AttesterError

log = logging.getLogger(__name__)

INIT_DATA_PCR = 8


class PcrRegisters:
    """A TPM's SHA-256 PCRs as the TCG-indexed measurement registers (identity mapping)."""

    tpm: Tpm

    def supports_runtime_measurement(self) -> bool:
        return True

    def ccel_hash_algorithm(self) -> str:
        return "sha256"

    def pcr_to_ccmr(self, pcr: int) -> int:
        return pcr

    async def extend_runtime_measurement(self, event_digest: bytes, pcr: int) -> None:
        await asyncio.to_thread(self.tpm.extend_pcr, pcr, event_digest)

    async def get_runtime_measurement(self, pcr: int) -> bytes:
        if not 0 <= pcr < PCR_COUNT:
            raise AttesterError(f"Invalid PCR index: {pcr}")
        return (await asyncio.to_thread(self.tpm.read_pcrs_sha256))[pcr]

    async def bind_init_data(self, digest: bytes) -> InitDataResult:
        await bind_pcr8(self.tpm, digest)
        return InitDataResult.OK


async def bind_pcr8(tpm: Tpm, digest: bytes) -> None:
    """Extend PCR 8 (SHA-256 bank) with the 32-byte initdata digest, as upstream does.

    Unlike upstream, a PCR 8 that already holds exactly ``sha256(0^32 || digest)`` (one extend
    of this digest from reset) is left alone: a second extend would make it match no initdata.
    """
    if len(digest) != SHA256_SIZE:
        raise AttesterError("expected sha256 digest")
    current = (await asyncio.to_thread(tpm.read_pcrs_sha256))[INIT_DATA_PCR]
    if current == expected_extend(bytes(SHA256_SIZE), digest):
        log.info("PCR %d already holds this initdata digest; not extending again", INIT_DATA_PCR)
        return
    log.info("Extending PCR %d with %s", INIT_DATA_PCR, digest.hex())
    await asyncio.to_thread(tpm.extend_pcr, INIT_DATA_PCR, digest)
