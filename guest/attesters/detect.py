"""Choose the primary attester: upstream's detection order, or a forced TEE.

Upstream order: tdx, sgx, az-tdx-vtpm, az-snp-vtpm, snp, csv, cca, se, tpm, else ``sample``
with a warning. Of these, this implementation attests ``tdx``, ``az-tdx-vtpm``,
``az-snp-vtpm``, ``snp``, ``tpm`` and ``sample``; sgx, csv, cca and se are not detected.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from guest.attesters import az_vtpm
from guest.attesters import tpm as tpm_attester
from guest.attesters.az_vtpm import AZ_SNP_VTPM, AZ_TDX_VTPM, VtpmSettings
from guest.attesters.base import SAMPLE, SNP, TDX, Attester
from guest.attesters.sample import SampleAttester
from guest.attesters.snp import SnpAttester
from guest.attesters.tdx import TDX_GUEST_DEVICE, TdxAttester
from guest.attesters.tpm import TPM, TpmAttester, TpmSettings
from guest.attesters.tpmdev import Tpm
from guest.attesters.tsm import TsmReports
from guest.errors import AttesterError

log = logging.getLogger(__name__)

SEV_GUEST_PLATFORM = Path("/sys/devices/platform/sev-guest")
AUTO = "auto"
CHOICES = (AUTO, SAMPLE, TDX, SNP, AZ_SNP_VTPM, AZ_TDX_VTPM, TPM)

SAMPLE_WARNING = (
    "No TEE platform detected. Sample Attester will be used. If you are expecting to "
    "collect evidence from inside a confidential guest, either your guest is not configured "
    "correctly, or your attestation client was not built with support for the platform. "
    "Attestation will continue using the fallback sample attester."
)


@dataclass(frozen=True, slots=True)
class Platform:
    """Where detection looks: the configfs-tsm tree, the file system root, the TPMs."""

    tsm: TsmReports = field(default_factory=TsmReports)
    sysroot: Path = Path("/")
    vtpm: VtpmSettings = field(default_factory=VtpmSettings)
    #: the generic TPM attester's device and AK (None: no TPM device found)
    tpm: TpmSettings | None = None


def platform_from_env(environ: Mapping[str, str]) -> Platform:
    """The default platform, with upstream's ``AA_TPM_DEVICE`` / ``AA_TPM_AK_HANDLE``."""
    return Platform(tpm=tpm_attester.settings_from_env(environ))


def detect_tee(platform: Platform) -> str:
    """The kbs-types name of the TEE this guest runs in, in upstream's order."""
    tsm = platform.tsm
    provider = tsm.provider() if tsm.available() else None
    if provider == TDX or _exists(platform.sysroot, TDX_GUEST_DEVICE):
        return TDX
    azure = _azure_vtpm(platform)
    if azure is not None:  # az-tdx-vtpm, then az-snp-vtpm: one HCL report says which
        return azure
    if _exists(platform.sysroot, SEV_GUEST_PLATFORM):
        return SNP
    if platform.tpm is not None:
        log.warning(tpm_attester.UNBOUND_WARNING)
        return TPM
    return SAMPLE


def _azure_vtpm(platform: Platform) -> str | None:
    tcti = platform.vtpm.tcti
    if tcti.startswith("device:") and not _exists(platform.sysroot, Path(tcti[7:])):
        return None
    return az_vtpm.detect(Tpm(tcti))


def _exists(sysroot: Path, path: Path) -> bool:
    return (sysroot / path.relative_to("/")).exists()


def make_attester(forced: str = AUTO, platform: Platform | None = None) -> Attester:
    platform = platform or Platform()
    tee = detect_tee(platform) if forced == AUTO else forced
    if tee == TDX:
        return TdxAttester(platform.tsm)
    if tee == SNP:
        return SnpAttester(platform.tsm)
    if tee == AZ_SNP_VTPM:
        return az_vtpm.AzSnpVtpmAttester(platform.vtpm)
    if tee == AZ_TDX_VTPM:
        return az_vtpm.AzTdxVtpmAttester(platform.vtpm)
    if tee == TPM:
        if platform.tpm is None:
            raise AttesterError("No TPM device found")
        return TpmAttester(platform.tpm)
    if tee == SAMPLE:
        if forced == AUTO:
            log.warning(SAMPLE_WARNING)
        return SampleAttester()
    raise AttesterError(f"TEE {tee!r} is detected but not supported by this attestation-agent")
