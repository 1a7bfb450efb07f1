"""GCP provider settings, under upstream cloud-api-adaptor's env names, flags and defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from providers.base import ConfigError
from runtime.settings import setting

DEFAULT_MACHINE_TYPE = "e2-medium"
DEFAULT_DISK_TYPE = "pd-standard"
CONFIDENTIAL_TYPES = ("TDX", "SEV", "SEV_SNP")
# Compute Engine limits API requests per project and minute, separately for read and
# mutating ("write") requests, and answers 403 rateLimitExceeded or 429 past them. The
# client side spreads its mutating calls to ``GCP_API_RATE`` per second; reads get four times
# that. Bursts allow a few seconds' worth at once.
DEFAULT_API_RATE = 10.0
READ_RATE_FACTOR = 4.0
BURST_SECONDS = 5.0


@dataclass(frozen=True)
class GcpSettings:
    TITLE: ClassVar[str] = "GCP provider"

    credentials: str = setting(
        env="GCP_CREDENTIALS", flag="gcp-credentials", default="", secret=True,
        help="Google Application Credentials (service account key JSON); empty: application "
        "default credentials",
    )
    project_id: str = setting(
        env="GCP_PROJECT_ID", flag="gcp-project-id", default="", required=True,
        help="GCP Project ID",
    )
    zone: str = setting(env="GCP_ZONE", flag="zone", default="", required=True, help="Zone")
    image_name: str = setting(
        env="PODVM_IMAGE_NAME", flag="image-name", default="", help="Pod VM image name",
    )
    machine_type: str = setting(
        env="GCP_MACHINE_TYPE", flag="machine-type", default=DEFAULT_MACHINE_TYPE,
        help="Pod VM instance type",
    )
    machine_types: tuple[str, ...] = setting(
        env="GCP_INSTANCE_TYPES", flag="machine-types", default=(),
        help="Machine types to be used for the Pod VMs, comma separated",
    )
    network: str = setting(
        env="GCP_NETWORK", flag="network", default="", required=True,
        help="Network ID to be used for the Pod VMs",
    )
    subnetwork: str = setting(
        env="GCP_SUBNETWORK", flag="subnetwork", default="",
        help="Subnetwork ID to be used for the Pod VMs (required for custom subnet mode "
        "networks)",
    )
    disk_type: str = setting(
        env="GCP_DISK_TYPE", flag="disk-type", default=DEFAULT_DISK_TYPE,
        help="Any GCP disk type (pd-standard, pd-ssd, pd-balanced or pd-extreme)",
    )
    disable_cvm: bool = setting(
        env="DISABLECVM", flag="disable-cvm", default=False, help="Use non-CVMs for peer pods",
    )
    confidential_type: str = setting(
        env="GCP_CONFIDENTIAL_TYPE", flag="confidential-type", default="",
        help="Used when DisableCVM=false. i.e: TDX, SEV or SEV_SNP. Check if the machine type "
        "is compatible.",
    )
    root_volume_size: int = setting(
        env="ROOT_VOLUME_SIZE", flag="root-volume-size", default=10,
        help="Root volume size (in GiB) for the Pod VMs",
    )
    use_public_ip: bool = setting(
        env="USE_PUBLIC_IP", flag="use-public-ip", default=False,
        help="Use Public IP for connecting to the kata-agent inside the Pod VM",
    )
    tags: Mapping[str, str] | None = setting(
        env="TAGS", flag="tags", default=None,
        help="List of tags to be added to the Pod VMs. Tags must already exist in the GCP "
        "project. Format: key1=value1,key2=value2",
    )
    api_endpoint: str = setting(
        env="GCP_API_ENDPOINT", flag="gcp-api-endpoint", default="",
        help="Compute Engine API endpoint with its scheme (a private endpoint instead of "
        "compute.googleapis.com); an http:// endpoint is sent no credentials",
    )
    api_rate: float = setting(
        env="GCP_API_RATE", flag="gcp-api-rate", default=DEFAULT_API_RATE,
        help="Client-side limit for mutating Compute Engine calls per second (reads get 4x); "
        "0 disables the limiter",
    )
    api_timeout: timedelta = setting(
        env="GCP_API_TIMEOUT", flag="gcp-api-timeout", default=timedelta(minutes=5),
        help="How long one provider operation keeps retrying throttled calls and waiting on "
        "its zone operation",
    )

    @property
    def default_machine_type(self) -> str:
        return self.machine_type or DEFAULT_MACHINE_TYPE

    @property
    def resource_tags(self) -> Mapping[str, str]:
        return self.tags or {}

    @property
    def region(self) -> str:
        """The zone's region (``us-central1-a`` -> ``us-central1``), as upstream derives it."""
        parts = self.zone.split("-")
        return "-".join(parts[:-1]) if len(parts) >= 2 else ""

    def check(self) -> None:
        """Raise :class:`ConfigError` for settings that cannot make a pod VM."""
        if not self.disable_cvm:
            if not self.confidential_type:
                raise ConfigError("GCP_CONFIDENTIAL_TYPE must be set (TDX, SEV or SEV_SNP) "
                                  "when confidential VMs are on (DISABLECVM=false)")
            if self.confidential_type not in CONFIDENTIAL_TYPES:
                raise ConfigError(f"GCP_CONFIDENTIAL_TYPE={self.confidential_type!r}: not one "
                                  f"of {', '.join(CONFIDENTIAL_TYPES)}")
            if self.confidential_type == "TDX" and self.disk_type == "pd-standard":
                raise ConfigError("GCP_DISK_TYPE=pd-standard is refused on the c3 machine "
                                  "types that TDX needs: set GCP_DISK_TYPE=pd-balanced (or "
                                  "hyperdisk-balanced)")
        if not self.image_name:
            raise ConfigError("PODVM_IMAGE_NAME (-image-name) is empty")
