"""Settings of ``process-user-data`` (parsed once by ``forwarder.pud_main``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocols import userdata

#: Mode of every file written under the peerpod dir. They hold the TLS server key
#: (apf.json), registry credentials (auth.json) and attestation configuration, and every
#: reader (forwarder, attestation-agent, confidential-data-hub, kata-agent, tpm2 tools) runs
#: as root, so no file needs to be readable by others.
FILE_MODE = 0o600
#: Mode of directories created on the way.
DIR_MODE = 0o755


@dataclass(frozen=True, slots=True)
class ProvisionConfig:
    peerpod_dir: Path = Path(userdata.PEERPOD_DIR)
    cidata_dir: Path = Path(userdata.CIDATA_DIR)
    dmi_dir: Path = Path("/sys/class/dmi/id")
    aws_imds_url: str = "http://169.254.169.254"
    azure_imds_url: str = "http://169.254.169.254"
    gcp_metadata_url: str = "http://metadata.google.internal"
    alibaba_metadata_url: str = "http://100.100.100.200"
    #: Seconds to keep trying to get valid user-data (upstream ``-t``, default 180).
    fetch_timeout: float = 180.0
    #: Seconds between attempts (upstream: a fixed 5 s).
    retry_delay: float = 5.0
    #: PCR 8 is extended only when this device exists; ``None`` disables extending.
    tpm_device: Path | None = Path("/dev/tpmrm0")
    pcrextend_command: str = "tpm2_pcrextend"
