"""Pure builders: RunInstances parameters out of a request, Instance values out of EC2 data."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from ipaddress import ip_address
from typing import Any

from providers.aws.settings import AwsSettings
from providers.base import Instance, InstanceRequest, InstanceState, IPAddress, ProviderError
from providers.kit import TagMap, instance_tags
from providers.kit import state_of as kit_state

MAX_INT32 = 2**31 - 1
CLIENT_TOKEN_PREFIX = "peerpods-"
MAX_CLIENT_TOKEN_LEN = 64
# States of an instance that is gone or going; anything else still counts as alive.
GONE_STATES = frozenset({"shutting-down", "terminated"})
ALIVE_STATES = ("pending", "running", "stopping", "stopped")
STATES = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "stopping": InstanceState.STOPPING,
    "stopped": InstanceState.STOPPED,
    "shutting-down": InstanceState.TERMINATED,
    "terminated": InstanceState.TERMINATED,
}
NAME_TAG = "Name"
# EC2 takes the logical keys as they are.
TAGS = TagMap()


class AddressNotReady(ProviderError):
    """RunInstances reported no usable private address for the instance."""


def client_token(sandbox_id: str, attempt: int = 0) -> str:
    """The RunInstances idempotency token for one creation of a sandbox: stable, ASCII, 64
    characters. EC2 answers a token reused after termination with the terminated instance,
    so each creation after a delete (``attempt`` + 1) gets a token of its own."""
    key = sandbox_id if attempt == 0 else f"{sandbox_id}/{attempt}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return (CLIENT_TOKEN_PREFIX + digest)[:MAX_CLIENT_TOKEN_LEN]


@dataclass(frozen=True, slots=True)
class ImageInfo:
    image_id: str
    root_device_name: str
    root_size_gib: int
    boot_mode: str


def image_info(image: Mapping[str, Any]) -> ImageInfo:
    root = str(image.get("RootDeviceName") or "")
    size = 0
    for mapping in image.get("BlockDeviceMappings") or ():
        if mapping.get("DeviceName") == root:
            size = int((mapping.get("Ebs") or {}).get("VolumeSize") or 0)
            break
    return ImageInfo(
        image_id=str(image.get("ImageId", "")),
        root_device_name=root,
        root_size_gib=size,
        boot_mode=str(image.get("BootMode") or ""),
    )


def root_volume_gib(configured: int, image: ImageInfo) -> int:
    return min(max(configured, image.root_size_gib), MAX_INT32)


def tag_specifications(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{
        "ResourceType": "instance",
        "Tags": [{"Key": key, "Value": value} for key, value in tags.items()],
    }]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where pod VMs go once the settings were completed from the worker's IMDS."""

    subnet_id: str = ""
    security_group_ids: tuple[str, ...] = ()
    key_name: str = ""


def run_instances_params(
    request: InstanceRequest,
    settings: AwsSettings,
    placement: Placement,
    *,
    image: ImageInfo | None,
    instance_type: str,
) -> dict[str, Any]:
    """Keyword arguments for ``ec2.run_instances``, as upstream's ``CreateInstance``
    (cloud-providers/aws/provider.go) builds its ``RunInstancesInput``.

    ``UserData`` stays raw bytes: botocore base64-encodes it for RunInstances. With a launch
    template only the template name, user-data, tags and (as upstream) the root volume's
    ``BlockDeviceMappings`` are sent; ``image`` then is the configured AMI, used only for its
    root device.
    """
    params: dict[str, Any] = {
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": client_token(request.sandbox_id, request.attempt),
        "UserData": request.user_data,
        "TagSpecifications": tag_specifications(TAGS.to_cloud(
            instance_tags(request, defaults=settings.extra_tags, name_tag=NAME_TAG)
        )),
    }
    if settings.use_launch_template:
        params["LaunchTemplate"] = {"LaunchTemplateName": settings.launch_template_name}
    else:
        if image is None:
            raise ValueError("an image is needed without a launch template")
        params.update(_instance_params(settings, placement, image, instance_type))
    if settings.root_volume_size > 0:
        if image is None:
            raise ValueError("an image is needed for the root volume size")
        params["BlockDeviceMappings"] = [{
            "DeviceName": image.root_device_name,
            "Ebs": {"VolumeSize": root_volume_gib(settings.root_volume_size, image)},
        }]
    return params


def _instance_params(
    settings: AwsSettings, placement: Placement, image: ImageInfo, instance_type: str
) -> dict[str, Any]:
    params: dict[str, Any] = {"ImageId": image.image_id, "InstanceType": instance_type}
    if placement.key_name:
        params["KeyName"] = placement.key_name
    if settings.use_public_ip:
        nic: dict[str, Any] = {
            "DeviceIndex": 0,
            "AssociatePublicIpAddress": True,
            "DeleteOnTermination": True,
        }
        if placement.subnet_id:
            nic["SubnetId"] = placement.subnet_id
        if placement.security_group_ids:
            nic["Groups"] = list(placement.security_group_ids)
        params["NetworkInterfaces"] = [nic]
    else:
        if placement.subnet_id:
            params["SubnetId"] = placement.subnet_id
        if placement.security_group_ids:
            params["SecurityGroupIds"] = list(placement.security_group_ids)
    if not settings.disable_cvm:
        params["CpuOptions"] = {"AmdSevSnp": "enabled"}
    return params


def _nics(instance: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    nics = list(instance.get("NetworkInterfaces") or ())
    return sorted(nics, key=lambda nic: (nic.get("Attachment") or {}).get("DeviceIndex", 0))


def private_ips(instance: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    """One private address per NIC, in device order; strict, as a fresh instance needs."""
    raw = [nic.get("PrivateIpAddress") for nic in _nics(instance)]
    if not raw:
        raw = [instance.get("PrivateIpAddress")]
    ips: list[IPAddress] = []
    for value in raw:
        if not value or value == "0.0.0.0":
            raise AddressNotReady(
                f"instance {instance.get('InstanceId', '?')}: address not ready"
            )
        try:
            ips.append(ip_address(str(value)))
        except ValueError as exc:
            raise AddressNotReady(
                f"instance {instance.get('InstanceId', '?')}: bad private address {value!r}"
            ) from exc
    return tuple(ips)


def public_ip(instance: Mapping[str, Any]) -> IPAddress | None:
    value = instance.get("PublicIpAddress")
    if not value:
        return None
    try:
        return ip_address(str(value))
    except ValueError:
        return None


def tags_of(instance: Mapping[str, Any]) -> dict[str, str]:
    stored = {str(t["Key"]): str(t.get("Value", "")) for t in instance.get("Tags") or ()}
    return TAGS.from_cloud(stored)


def state_of(instance: Mapping[str, Any]) -> str:
    return str((instance.get("State") or {}).get("Name", ""))


def to_instance(
    instance: Mapping[str, Any], *, public_first: bool, ips: Sequence[IPAddress] | None = None
) -> Instance:
    """An :class:`Instance` from a DescribeInstances/RunInstances entry (lenient on IPs)."""
    if ips is None:
        try:
            found: list[IPAddress] = list(private_ips(instance))
        except AddressNotReady:
            found = []
        public = public_ip(instance)
        if public_first and public is not None:
            found = [public, *found[1:]] if found else [public]
        ips = found
    tags = tags_of(instance)
    launched = instance.get("LaunchTime")
    return Instance(
        id=str(instance["InstanceId"]),
        name=tags.get(NAME_TAG, ""),
        ips=tuple(ips),
        tags=tags,
        created_at=launched if isinstance(launched, datetime) else None,
        state=kit_state(state_of(instance), STATES),
    )
