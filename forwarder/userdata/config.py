"""Settings of ``process-user-data``, declared for :mod:`runtime.settings` (parsed once by
``forwarder.pud_main``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from protocols import userdata
from runtime.settings import SettingsError, setting

#: Mode of every file written under the peerpod dir. They hold the TLS server key
#: (apf.json), registry credentials (auth.json) and attestation configuration, and every
#: reader (forwarder, attestation-agent, confidential-data-hub, kata-agent, tpm2 tools) runs
#: as root, so no file needs to be readable by others.
FILE_MODE = 0o600
#: Mode of directories created on the way.
DIR_MODE = 0o755


def positive_seconds(text: str) -> float:
    value = _seconds(text)
    if not value > 0:
        raise SettingsError(f"must be more than 0 seconds: {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    value = _seconds(text)
    if value < 0:
        raise SettingsError(f"must not be negative: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"not a number of seconds: {text!r}") from None


def optional_path(text: str) -> Path | None:
    return Path(text) if text else None


@dataclass(frozen=True, slots=True)
class ProvisionConfig:
    """``provision-files`` settings. Each env var counts when set, even to "" (an empty
    ``PUD_TPM_DEVICE`` disables PCR 8), and a flag overrides it."""

    TITLE: ClassVar[str] = "provision-files flags"
    EMPTY_ENV_IS_SET: ClassVar[bool] = True

    peerpod_dir: Path = setting(
        env="PUD_PEERPOD_DIR", flag="--peerpod-dir", default=Path(userdata.PEERPOD_DIR),
        help="directory the files are written to")
    cidata_dir: Path = setting(
        env="PUD_CIDATA_DIR", flag="--cidata-dir", default=Path(userdata.CIDATA_DIR),
        help="config drive mount point; <dir>/user-data is the first source")
    dmi_dir: Path = setting(
        env="PUD_DMI_DIR", flag="--dmi-dir", default=Path("/sys/class/dmi/id"),
        help="sysfs DMI directory used to recognise the cloud")
    aws_imds_url: str = setting(
        env="PUD_AWS_IMDS_URL", flag="--aws-imds-url", default="http://169.254.169.254",
        help="AWS instance metadata service base URL")
    azure_imds_url: str = setting(
        env="PUD_AZURE_IMDS_URL", flag="--azure-imds-url", default="http://169.254.169.254",
        help="Azure instance metadata service base URL")
    gcp_metadata_url: str = setting(
        env="PUD_GCP_METADATA_URL", flag="--gcp-metadata-url",
        default="http://metadata.google.internal", help="GCP metadata server base URL")
    alibaba_metadata_url: str = setting(
        env="PUD_ALIBABA_METADATA_URL", flag="--alibaba-metadata-url",
        default="http://100.100.100.200", help="Alibaba Cloud metadata service base URL")
    #: Seconds to keep trying to get valid user-data (upstream ``-t``, default 180).
    fetch_timeout: float = setting(
        flag="--user-data-fetch-timeout", aliases=("-t",), default=180.0,
        parse=positive_seconds, metavar="SECONDS", help="timeout for fetching user data")
    #: Seconds between attempts (upstream: a fixed 5 s).
    retry_delay: float = setting(
        env="PUD_RETRY_DELAY", flag="--retry-delay", default=5.0, parse=non_negative_seconds,
        metavar="SECONDS", help="seconds between user-data fetch attempts")
    #: Upstream's process-user-data only writes the digest, and its image extends PCR 8 from a
    #: systemd ExecStartPost (podvm/mkosi.images/.../process-user-data.service.d/
    #: 10-override.conf). Off by default so an upstream image does not extend PCR 8 twice;
    #: an image that does not extend by itself turns it on, and then a failing extend is an
    #: error (fail-closed).
    extend_pcr8: bool = setting(
        env="PUD_EXTEND_PCR8", flag="--extend-pcr8", default=False,
        help="extend PCR 8 with the initdata digest (upstream images do it from the unit)")
    #: PCR 8 is extended only when this device exists; ``None`` disables extending.
    tpm_device: Path | None = setting(
        env="PUD_TPM_DEVICE", flag="--tpm-device", default=Path("/dev/tpmrm0"),
        parse=optional_path,
        help="PCR 8 is extended only if this TPM device exists; empty disables")
    pcrextend_command: str = setting(
        env="PUD_PCREXTEND_COMMAND", flag="--pcrextend-command", default="tpm2_pcrextend",
        help="command that extends a PCR (called as <cmd> 8:sha256=<hex>)")
