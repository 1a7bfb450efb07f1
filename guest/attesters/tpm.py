"""The generic ``tpm`` attester: a (v)TPM not bound to a TEE, as guest-components has it.

Evidence ``{"tpm_quote": {"signature", "message", "pcrs"}, "ak_public"}``:

- the report data is truncated or zero-padded to 32 bytes and is the quote's qualifying data;
- TPM2_Quote over PCRs 0-23 (SHA-256) with the persistent AK, RSASSA-SHA256;
- ``signature``: standard base64 of the marshalled TPMT_SIGNATURE; ``message``: standard
  base64 of the marshalled TPMS_ATTEST; ``pcrs``: hex, read right after the quote;
- ``ak_public``: standard base64 of the AK's DER SubjectPublicKeyInfo (RSA).

Device: ``AA_TPM_DEVICE``, else the first of /dev/tpm0, /dev/tpm1, /dev/tpm2 that exists.
AK: ``AA_TPM_AK_HANDLE`` (hex), else ``0x81010002``. Initdata: PCR 8 extended.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guest.attesters.base import InitDataResult, pad
from guest.attesters.pcr import PcrRegisters
from guest.attesters.tpmdev import SHA256_SIZE, Tpm
from guest.errors import AttesterError

log = logging.getLogger(__name__)

TPM = "tpm"
DEVICE_ENV = "AA_TPM_DEVICE"
AK_HANDLE_ENV = "AA_TPM_AK_HANDLE"
DEFAULT_AK_HANDLE = 0x81010002
DEVICES = (Path("/dev/tpm0"), Path("/dev/tpm1"), Path("/dev/tpm2"))
REPORT_DATA_SIZE = 32
UNBOUND_WARNING = (
    "The TPM device was detected, but please note that it is not bound to the TEE, "
    "so there may be security risks."
)


@dataclass(frozen=True, slots=True)
class TpmSettings:
    device: Path
    ak_handle: int
    #: tpm2-tss TCTI; ``device:<device>`` unless given (tests reach swtpm this way)
    tcti: str | None = None


def settings_from_env(environ: Mapping[str, str]) -> TpmSettings | None:
    """Upstream's ``detect_tpm_device`` and ``get_ak_handle``; None when either fails."""
    device = _device(environ)
    if device is None:
        return None
    raw = environ.get(AK_HANDLE_ENV)
    if raw is None:
        return TpmSettings(device, DEFAULT_AK_HANDLE)
    try:
        return TpmSettings(device, int(raw.removeprefix("0x"), 16))
    except ValueError:
        log.warning("Invalid AK handle %r", raw)
        return None


def _device(environ: Mapping[str, str]) -> Path | None:
    forced = environ.get(DEVICE_ENV)
    if forced is not None:
        if Path(forced).exists():
            return Path(forced)
        log.warning("%s env set to %r, but device does not exist", DEVICE_ENV, forced)
        return None
    for device in DEVICES:
        if device.exists():
            return device
    log.debug("No TPM device (/dev/tpm[0..2]) detected")
    return None


class TpmAttester(PcrRegisters):
    tee = TPM

    def __init__(self, settings: TpmSettings) -> None:
        self.settings = settings
        self.tpm = Tpm(settings.tcti or f"device:{settings.device}")
        log.info(
            "[TPM Attester] Initialized using TPM device: %s and AK handle: %#x",
            settings.device,
            settings.ak_handle,
        )

    async def evidence(self, report_data: bytes) -> Any:
        nonce = pad(report_data, REPORT_DATA_SIZE)
        handle = self.settings.ak_handle
        ak_public = await asyncio.to_thread(self.tpm.public_key_der, handle)
        quote = await asyncio.to_thread(self.tpm.quote, handle, nonce, rsassa_sha256=True)
        return {
            "tpm_quote": {
                "signature": base64.b64encode(quote.signature).decode(),
                "message": base64.b64encode(quote.attest).decode(),
                "pcrs": [pcr.hex() for pcr in quote.pcrs],
            },
            "ak_public": base64.b64encode(ak_public).decode(),
        }

    async def extend_runtime_measurement(self, event_digest: bytes, pcr: int) -> None:
        if len(event_digest) != SHA256_SIZE:
            raise AttesterError("Failed to extend PCR: Event digest length is not 32 bytes")
        await super().extend_runtime_measurement(event_digest, pcr)

    async def bind_init_data(self, digest: bytes) -> InitDataResult:
        if len(digest) != SHA256_SIZE:
            raise AttesterError(
                "Failed to extend PCR for init data: Event digest length is not 32 bytes"
            )
        return await super().bind_init_data(digest)
