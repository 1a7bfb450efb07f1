"""Pure builders of the ARM request bodies and readers of the answers (no network).

The VM body follows upstream's ``getVMParameters``: the NIC ``<name>-net`` and the OS disk
``<name>-disk`` are made by the VM and deleted with it, user data is base64 cloud-config of
at most 64 KiB, and a confidential VM has the ``ConfidentialVM`` security profile with vTPM
and a ``VMGuestStateOnly`` OS disk.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from ipaddress import ip_address
from typing import Any

from azure.mgmt.compute import models as cm

from providers.azure.settings import AzureSettings
from providers.base import (
    NODE_TAG,
    POD_NAME_TAG,
    POD_NAMESPACE_TAG,
    SANDBOX_TAG,
    Instance,
    InstanceRequest,
    InstanceState,
    InvalidSpec,
    IPAddress,
)
from providers.kit import TagMap, state_of

# Azure limits the base64 user data to 64 KiB
# (https://learn.microsoft.com/en-us/azure/virtual-machines/user-data).
USER_DATA_LIMIT = 64 * 1024
NETWORK_API_VERSION = "2020-11-01"  # as upstream: the VM makes its NIC
MAX_VM_NAME = 64  # Linux VM resource names
LOGICAL_KEYS = (NODE_TAG, SANDBOX_TAG, POD_NAME_TAG, POD_NAMESPACE_TAG)
# The logical keys are valid Azure tag names already (no < > % & \ ? /).
TAGS = TagMap()

STATES: Mapping[str, InstanceState] = {
    "Creating": InstanceState.PENDING,
    "Updating": InstanceState.PENDING,
    "Migrating": InstanceState.PENDING,
    "Succeeded": InstanceState.RUNNING,
    "Deleting": InstanceState.TERMINATED,
}

_VM_ID = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/"
    r"virtualMachines/([^/]+)$", re.IGNORECASE,
)
_RESOURCE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/(?P<rest>.+)$",
    re.IGNORECASE,
)
_COMMUNITY = re.compile(
    r"^/CommunityGalleries/(?P<gallery>[^/]+)/Images/(?P<image>[^/]+)"
    r"(?:/Versions/(?P<version>[^/]+))?$", re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ResourceId:
    """An ARM resource id taken apart: resource group and the names after the provider."""

    resource_group: str
    provider: str
    names: tuple[tuple[str, str], ...]  # (type, name) pairs, outermost first

    def name_of(self, kind: str) -> str:
        for found, name in self.names:
            if found.lower() == kind.lower():
                return name
        return ""


def parse_resource_id(text: str) -> ResourceId | None:
    match = _RESOURCE.match(text)
    if match is None:
        return None
    parts = match["rest"].split("/")
    if len(parts) < 3 or len(parts) % 2 == 0:
        return None
    pairs = tuple(zip(parts[1::2], parts[2::2], strict=True))
    return ResourceId(match["rg"], parts[0], pairs)


def vm_name_of(instance_id: str) -> tuple[str, str] | None:
    """(resource group, VM name) of a VM resource id, ``None`` when it is not one."""
    match = _VM_ID.match(instance_id)
    return (match[2], match[3]) if match else None


def community_image(image_id: str) -> tuple[str, str, str] | None:
    """(gallery, image, version or "") of a community-gallery image id."""
    match = _COMMUNITY.match(image_id)
    return (match["gallery"], match["image"], match["version"] or "") if match else None


def vm_name(request: InstanceRequest) -> str:
    """The VM resource name: the instance name, with ``-<attempt>`` after a first instance
    of the sandbox was deleted (an ARM id is its name, and a new instance needs a new id)."""
    if request.attempt == 0:
        return request.name[:MAX_VM_NAME]
    suffix = f"-{request.attempt}"
    return request.name[:MAX_VM_NAME - len(suffix)] + suffix


def nic_name(name: str) -> str:
    return f"{name}-net"


def disk_name(name: str) -> str:
    return f"{name}-disk"


def encode_user_data(user_data: bytes) -> str:
    encoded = base64.b64encode(user_data).decode("ascii")
    if len(encoded) > USER_DATA_LIMIT:
        raise InvalidSpec(
            f"user data is {len(encoded)} bytes in base64, more than Azure's limit of "
            f"{USER_DATA_LIMIT} (64 KiB)"
        )
    return encoded


def image_reference(image_id: str) -> cm.ImageReference:
    if image_id.lower().startswith("/communitygalleries/"):
        return cm.ImageReference(community_gallery_image_id=image_id)
    return cm.ImageReference(id=image_id)


def network_config(name: str, s: AzureSettings) -> cm.VirtualMachineNetworkInterfaceConfiguration:
    ip_props = cm.VirtualMachineNetworkInterfaceIPConfigurationProperties(
        subnet=cm.SubResource(id=s.subnet_id),
    )
    if s.use_public_ip:
        ip_props.public_ip_address_configuration = cm.VirtualMachinePublicIPAddressConfiguration(
            name=nic_name(name),
            properties=cm.VirtualMachinePublicIPAddressConfigurationProperties(
                delete_option="Delete"),
        )
    props = cm.VirtualMachineNetworkInterfaceConfigurationProperties(
        delete_option="Delete",
        ip_configurations=[cm.VirtualMachineNetworkInterfaceIPConfiguration(
            name="ip-config", properties=ip_props)],
    )
    if s.nsg_id:
        props.network_security_group = cm.SubResource(id=s.nsg_id)
    return cm.VirtualMachineNetworkInterfaceConfiguration(name=nic_name(name), properties=props)


def os_disk(name: str, s: AzureSettings) -> cm.OSDisk:
    managed = cm.ManagedDiskParameters(storage_account_type="Premium_LRS")
    if not s.disable_cvm:
        managed.security_profile = cm.VMDiskSecurityProfile(
            security_encryption_type="VMGuestStateOnly")
    disk = cm.OSDisk(
        name=disk_name(name), create_option="FromImage", caching="ReadWrite",
        delete_option="Delete", managed_disk=managed,
    )
    if s.root_volume_size > 0:
        disk.disk_size_gb = s.root_volume_size
    return disk


def vm_body(
    *, name: str, computer_name: str, size: str, image_id: str, user_data: str,
    ssh_public_key: str, tags: Mapping[str, str], s: AzureSettings,
) -> cm.VirtualMachine:
    """The ``PUT virtualMachines/{name}`` body (``user_data`` already base64)."""
    user = s.ssh_username
    props = cm.VirtualMachineProperties(
        hardware_profile=cm.HardwareProfile(vm_size=size),
        storage_profile=cm.StorageProfile(
            image_reference=image_reference(image_id), os_disk=os_disk(name, s)),
        os_profile=cm.OSProfile(
            admin_username=user, computer_name=computer_name,
            linux_configuration=cm.LinuxConfiguration(
                disable_password_authentication=True,
                ssh=cm.SshConfiguration(public_keys=[cm.SshPublicKey(
                    path=f"/home/{user}/.ssh/authorized_keys", key_data=ssh_public_key)]),
            ),
        ),
        network_profile=cm.NetworkProfile(
            network_api_version=NETWORK_API_VERSION,
            network_interface_configurations=[network_config(name, s)],
        ),
        diagnostics_profile=cm.DiagnosticsProfile(
            boot_diagnostics=cm.BootDiagnostics(enabled=True)),
        user_data=user_data,
    )
    if not s.disable_cvm:
        props.security_profile = cm.SecurityProfile(
            security_type="ConfidentialVM",
            uefi_settings=cm.UefiSettings(
                secure_boot_enabled=s.enable_secure_boot, v_tpm_enabled=True),
        )
    vm = cm.VirtualMachine(location=s.region, tags=TAGS.to_cloud(tags), properties=props)
    if s.zone:
        vm.zones = [s.zone]
    return vm


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if obj is None:
            return None
        obj = getattr(obj, key, None)
    return obj


def nic_ids(vm: Any) -> list[str]:
    refs = _get(vm, "properties", "network_profile", "network_interfaces") or []
    return [str(ref.id) for ref in refs if getattr(ref, "id", None)]


def nic_addresses(nic: Any) -> tuple[list[IPAddress], list[str]]:
    """The NIC's private addresses and the ids of its public IP resources."""
    private: list[IPAddress] = []
    public_ids: list[str] = []
    for config in _get(nic, "properties", "ip_configurations") or []:
        address = _get(config, "properties", "private_ip_address")
        if address:
            private.append(ip_address(address))
        public = _get(config, "properties", "public_ip_address", "id")
        if public:
            public_ids.append(str(public))
    return private, public_ids


def vm_state(vm: Any) -> InstanceState:
    return state_of(str(_get(vm, "properties", "provisioning_state") or ""), STATES)


def to_instance(vm: Any, ips: tuple[IPAddress, ...]) -> Instance:
    tags = TAGS.from_cloud(dict(getattr(vm, "tags", None) or {}), LOGICAL_KEYS)
    created = _get(vm, "properties", "time_created")
    name = _get(vm, "properties", "os_profile", "computer_name") or str(vm.name)
    return Instance(
        id=str(vm.id), name=str(name), ips=ips, tags=tags,
        created_at=created if isinstance(created, datetime) else None,
        state=vm_state(vm),
    )
