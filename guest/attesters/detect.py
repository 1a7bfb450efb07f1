"""Choose the primary attester: upstream's detection order, or a forced TEE.

Upstream order: tdx, sgx, az-tdx-vtpm, az-snp-vtpm, snp, csv, cca, se, tpm, else ``sample``
with a warning. Of these, this implementation attests ``tdx``, ``snp`` and ``sample``;
a platform it recognises but cannot attest is an error rather than a silent fallback.
"""

from __future__ import annotations

import logging
from pathlib import Path

from guest.attesters.base import SAMPLE, SNP, TDX, Attester
from guest.attesters.sample import SampleAttester
from guest.attesters.snp import SnpAttester
from guest.attesters.tdx import TDX_GUEST_DEVICE, TdxAttester
from guest.attesters.tsm import TsmReports
from guest.errors import AttesterError

log = logging.getLogger(__name__)

SEV_GUEST_PLATFORM = Path("/sys/devices/platform/sev-guest")
AUTO = "auto"
CHOICES = (AUTO, SAMPLE, TDX, SNP)

SAMPLE_WARNING = (
    "No TEE platform detected. Sample Attester will be used. If you are expecting to "
    "collect evidence from inside a confidential guest, either your guest is not configured "
    "correctly, or your attestation client was not built with support for the platform. "
    "Attestation will continue using the fallback sample attester."
)


def detect_tee(tsm: TsmReports, *, sysroot: Path = Path("/")) -> str:
    """The kbs-types name of the TEE this guest runs in, in upstream's order."""
    provider = tsm.provider() if tsm.available() else None
    if provider == TDX or _exists(sysroot, TDX_GUEST_DEVICE):
        return TDX
    if _exists(sysroot, SEV_GUEST_PLATFORM):
        return SNP
    return SAMPLE


def _exists(sysroot: Path, path: Path) -> bool:
    return (sysroot / path.relative_to("/")).exists()


def make_attester(
    forced: str = AUTO, *, tsm: TsmReports | None = None, sysroot: Path = Path("/")
) -> Attester:
    tsm = tsm or TsmReports()
    tee = detect_tee(tsm, sysroot=sysroot) if forced == AUTO else forced
    if tee == TDX:
        return TdxAttester(tsm)
    if tee == SNP:
        return SnpAttester(tsm)
    if tee == SAMPLE:
        if forced == AUTO:
            log.warning(SAMPLE_WARNING)
        return SampleAttester()
    raise AttesterError(f"TEE {tee!r} is detected but not supported by this attestation-agent")
