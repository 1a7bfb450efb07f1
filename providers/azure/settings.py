"""Azure provider settings, under upstream cloud-api-adaptor's env names, flags and defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from runtime.settings import setting

DEFAULT_INSTANCE_SIZE = "Standard_DC2as_v5"
DEFAULT_SSH_USERNAME = "peerpod"
PUBLIC_ARM_ENDPOINT = "https://management.azure.com"

# ARM throttles per subscription and principal: a bucket of 250 writes refilled at about 4
# per second (Azure Resource Manager "Understand how Azure Resource Manager throttles
# requests", token bucket algorithm), reads 1200 at 20 per second; the Compute resource
# provider adds its own per-API limits on top. The client side keeps that shape:
# ``AZURE_API_RATE`` is the refill rate of writes, reads get five times that.
DEFAULT_API_RATE = 4.0
WRITE_BURST_SECONDS = 60.0  # ~250 tokens / 4 per second
READ_RATE_FACTOR = 5.0  # 20 per second / 4 per second
READ_BURST_SECONDS = 60.0  # 1200 tokens / 20 per second


@dataclass(frozen=True)
class AzureSettings:
    TITLE: ClassVar[str] = "Azure provider"

    client_id: str = setting(
        env="AZURE_CLIENT_ID", flag="clientid", default="", secret=True, help="Client Id",
    )
    client_secret: str = setting(
        env="AZURE_CLIENT_SECRET", flag="secret", default="", secret=True, help="Client Secret",
    )
    tenant_id: str = setting(
        env="AZURE_TENANT_ID", flag="tenantid", default="", secret=True, help="Tenant Id",
    )
    subscription_id: str = setting(
        env="AZURE_SUBSCRIPTION_ID", flag="subscriptionid", default="", required=True,
        help="Subscription ID",
    )
    region: str = setting(
        env="AZURE_REGION", flag="region", default="", required=True, help="Region",
    )
    resource_group: str = setting(
        env="AZURE_RESOURCE_GROUP", flag="resourcegroup", default="", required=True,
        help="Resource Group",
    )
    instance_size: str = setting(
        env="AZURE_INSTANCE_SIZE", flag="instance-size", default=DEFAULT_INSTANCE_SIZE,
        help="Instance size",
    )
    instance_sizes: tuple[str, ...] = setting(
        env="AZURE_INSTANCE_SIZES", flag="instance-sizes", default=(),
        help="Instance sizes to be used for the Pod VMs, comma separated",
    )
    zone: str = setting(flag="zone", default="", help="Zone")
    subnet_id: str = setting(
        env="AZURE_SUBNET_ID", flag="subnetid", default="", required=True,
        help="Network Subnet Id",
    )
    nsg_id: str = setting(
        env="AZURE_NSG_ID", flag="securitygroupid", default="", help="Security Group Id",
    )
    image_id: str = setting(
        env="AZURE_IMAGE_ID", flag="imageid", default="", required=True, help="Image Id",
    )
    ssh_key_path: str = setting(flag="ssh-key-path", default="", help="Path to SSH public key")
    ssh_username: str = setting(
        env="SSH_USERNAME", flag="ssh-username", default=DEFAULT_SSH_USERNAME,
        help="SSH User Name",
    )
    disable_cvm: bool = setting(
        env="DISABLECVM", flag="disable-cvm", default=False, help="Use non-CVMs for peer pods",
    )
    enable_secure_boot: bool = setting(
        env="ENABLE_SECURE_BOOT", flag="enable-secure-boot", default=False,
        help="Enable secure boot for the VMs",
    )
    use_public_ip: bool = setting(
        env="USE_PUBLIC_IP", flag="use-public-ip", default=False,
        help="Assign public IP to the PoD VM and use to connect to kata-agent",
    )
    root_volume_size: int = setting(
        env="ROOT_VOLUME_SIZE", flag="root-volume-size", default=0,
        help="Root volume size in GB. Default is 0, which implies the default image disk size",
    )
    tags: Mapping[str, str] | None = setting(
        env="TAGS", flag="tags", default=None,
        help="Custom tags (key=value pairs) to be used for the Pod VMs, comma separated",
    )
    arm_endpoint: str = setting(
        env="AZURE_ARM_ENDPOINT", flag="azure-arm-endpoint", default="",
        help="Azure Resource Manager endpoint (https), for another cloud than Azure's public "
        "one; tokens are asked for its /.default scope",
    )
    authority_host: str = setting(
        env="AZURE_AUTHORITY_HOST", flag="azure-authority-host", default="",
        help="Microsoft Entra authority for the client secret credential (as azure-identity "
        "reads it); when set, instance discovery is off",
    )
    api_rate: float = setting(
        env="AZURE_API_RATE", flag="azure-api-rate", default=DEFAULT_API_RATE,
        help="Client-side limit for ARM writes per second (reads get 5x); 0 disables the limiter",
    )
    api_timeout: timedelta = setting(
        env="AZURE_API_TIMEOUT", flag="azure-api-timeout", default=timedelta(minutes=10),
        help="How long one provider operation keeps retrying throttled or failed ARM calls",
    )

    @property
    def default_instance_size(self) -> str:
        return self.instance_size or DEFAULT_INSTANCE_SIZE

    @property
    def extra_tags(self) -> Mapping[str, str]:
        return self.tags or {}
