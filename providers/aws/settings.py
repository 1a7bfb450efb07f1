"""AWS provider settings, under upstream cloud-api-adaptor's env names, flags and defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from runtime.settings import setting

DEFAULT_INSTANCE_TYPE = "m6a.large"
DEFAULT_IMDS_URL = "http://169.254.169.254"

# EC2 throttles each API with a token bucket per account and region. For the request-rate
# buckets AWS documents (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html,
# "Request token bucket sizes and refill rates"): mutating actions hold 200 tokens and refill
# 5 per second; non-mutating actions hold 100 tokens and refill 20 per second (RunInstances
# additionally has a resource bucket of 1000 instances refilled at 2 per second). The client
# side keeps that shape: ``AWS_API_RATE`` is the refill rate of mutating calls, describe calls
# get four times that, and both bursts scale like EC2's bucket sizes.
DEFAULT_API_RATE = 5.0
MUTATING_BURST_SECONDS = 40.0  # 200 tokens / 5 per second
READ_RATE_FACTOR = 4.0  # 20 per second / 5 per second
READ_BURST_SECONDS = 5.0  # 100 tokens / 20 per second


@dataclass(frozen=True)
class AwsSettings:
    TITLE: ClassVar[str] = "AWS provider"

    access_key_id: str = setting(
        env="AWS_ACCESS_KEY_ID", flag="aws-access-key-id", default="", secret=True,
        help="Access Key ID",
    )
    secret_key: str = setting(
        env="AWS_SECRET_ACCESS_KEY", flag="aws-secret-key", default="", secret=True,
        help="Secret Key",
    )
    session_token: str = setting(
        env="AWS_SESSION_TOKEN", flag="aws-session-token", default="", secret=True,
        help="Session Token",
    )
    profile: str = setting(flag="aws-profile", default="", help="AWS Login Profile")
    region: str = setting(env="AWS_REGION", flag="aws-region", default="", help="Region")
    instance_type: str = setting(
        env="PODVM_INSTANCE_TYPE", flag="instance-type", default=DEFAULT_INSTANCE_TYPE,
        help="Pod VM instance type",
    )
    instance_types: tuple[str, ...] = setting(
        env="PODVM_INSTANCE_TYPES", flag="instance-types", default=(),
        help="Instance types to be used for the Pod VMs, comma separated",
    )
    image_id: str = setting(
        env="PODVM_AMI_ID", flag="imageid", default="", required=True, help="Pod VM ami id",
    )
    launch_template_name: str = setting(
        env="PODVM_LAUNCHTEMPLATE_NAME", flag="aws-lt-name", default="kata",
        help="AWS Launch Template Name",
    )
    use_launch_template: bool = setting(
        env="USE_PODVM_LAUNCHTEMPLATE", flag="use-lt", default=False,
        help="Use EC2 Launch Template for the Pod VMs",
    )
    key_name: str = setting(
        env="SSH_KP_NAME", flag="keyname", default="",
        help="SSH Keypair name to be used with the Pod VM",
    )
    subnet_id: str = setting(
        env="AWS_SUBNET_ID", flag="subnetid", default="",
        help="Subnet ID to be used for the Pod VMs",
    )
    security_group_ids: tuple[str, ...] = setting(
        env="AWS_SG_IDS", flag="securitygroupids", default=(),
        help="Security Group Ids to be used for the Pod VM, comma separated",
    )
    use_public_ip: bool = setting(
        env="USE_PUBLIC_IP", flag="use-public-ip", default=False,
        help="Use Public IP for connecting to the kata-agent inside the Pod VM",
    )
    root_volume_size: int = setting(
        env="ROOT_VOLUME_SIZE", flag="root-volume-size", default=30,
        help="Root volume size (in GiB) for the Pod VMs",
    )
    disable_cvm: bool = setting(
        env="DISABLECVM", flag="disable-cvm", default=False, help="Use non-CVMs for peer pods",
    )
    tags: Mapping[str, str] | None = setting(
        env="TAGS", flag="tags", default=None,
        help="Custom tags (key=value pairs) to be used for the Pod VMs, comma separated",
    )
    endpoint_url: str = setting(
        env="AWS_ENDPOINT_URL", flag="aws-endpoint-url", default="",
        help="EC2 API endpoint URL (an EC2-compatible endpoint instead of AWS's own)",
    )
    api_rate: float = setting(
        env="AWS_API_RATE", flag="aws-api-rate", default=DEFAULT_API_RATE,
        help="Client-side limit for mutating EC2 calls per second (describe calls get 4x); "
        "0 disables the limiter",
    )
    api_timeout: timedelta = setting(
        env="AWS_API_TIMEOUT", flag="aws-api-timeout", default=timedelta(minutes=2),
        help="How long one provider operation keeps retrying throttled EC2 calls",
    )
    imds_url: str = setting(
        env="AWS_IMDS_URL", flag="aws-imds-url", default=DEFAULT_IMDS_URL,
        help="Worker IMDS base URL, used to fill a missing region, subnet, key name and "
        "security groups; empty disables the lookup",
    )

    @property
    def default_instance_type(self) -> str:
        return self.instance_type or DEFAULT_INSTANCE_TYPE

    @property
    def extra_tags(self) -> Mapping[str, str]:
        return self.tags or {}
