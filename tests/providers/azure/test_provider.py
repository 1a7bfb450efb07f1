"""The Azure provider's own behaviour against the loopback ARM endpoint: request bodies,
images, public IPs, NSGs, tags, limits, throttling, quota, leftovers, logs."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from providers.azure.provider import AzureProvider
from providers.base import (
    NODE_TAG,
    SANDBOX_TAG,
    ConfigError,
    InstanceSpec,
    InvalidSpec,
    QuotaExceeded,
)
from tests.providers.azure.armserver import ArmServer
from tests.providers.azure.conftest import USER_DATA, community_image, request_for

Factory = Callable[..., AzureProvider]


def last_body(arm: ArmServer) -> dict[str, Any]:
    return arm.state.vm_bodies[-1]


async def test_cvm_body_as_upstream(arm: ArmServer, providers: Factory) -> None:
    request = request_for()
    instance = await providers().create_instance(request)
    body = last_body(arm)
    props = body["properties"]
    assert body["location"] == "eastus"
    assert props["hardwareProfile"] == {"vmSize": "Standard_DC2as_v5"}
    assert props["securityProfile"] == {
        "securityType": "ConfidentialVM",
        "uefiSettings": {"secureBootEnabled": False, "vTpmEnabled": True}}
    disk = props["storageProfile"]["osDisk"]
    assert disk == {
        "name": f"{request.name}-disk", "createOption": "FromImage", "caching": "ReadWrite",
        "deleteOption": "Delete", "managedDisk": {
            "storageAccountType": "Premium_LRS",
            "securityProfile": {"securityEncryptionType": "VMGuestStateOnly"}}}
    assert base64.b64decode(props["userData"]) == USER_DATA
    os_profile = props["osProfile"]
    assert os_profile["computerName"] == request.name
    assert os_profile["adminUsername"] == "peerpod"
    [key] = os_profile["linuxConfiguration"]["ssh"]["publicKeys"]
    assert key["path"] == "/home/peerpod/.ssh/authorized_keys"
    assert key["keyData"].startswith("ssh-rsa ")
    assert len(base64.b64decode(key["keyData"].split()[1])) > 500  # RSA-4096
    net = props["networkProfile"]
    assert net["networkApiVersion"] == "2020-11-01"
    [nic] = net["networkInterfaceConfigurations"]
    assert nic["name"] == f"{request.name}-net"
    assert nic["properties"]["deleteOption"] == "Delete"
    assert "networkSecurityGroup" not in nic["properties"]
    [ipc] = nic["properties"]["ipConfigurations"]
    assert "publicIPAddressConfiguration" not in ipc["properties"]
    assert props["diagnosticsProfile"] == {"bootDiagnostics": {"enabled": True}}
    assert props["storageProfile"]["imageReference"] == {
        "id": arm.state.resource_id("Microsoft.Compute", "images", "podvm-image")}
    assert instance.id == arm.state.resource_id(
        "Microsoft.Compute", "virtualMachines", request.name)
    [address] = instance.ips
    assert address in ip_network(arm.state.subnet_cidr)
    # the long-running operation was polled through its in-progress answers
    assert len(arm.calls("GET", "/operations/")) == arm.state.faults.operation_polls + 1
    assert {s.api_version for s in arm.calls("PUT", "/virtualMachines/")} == {"2026-04-01"}


async def test_non_cvm_and_secure_boot(arm: ArmServer, providers: Factory) -> None:
    await providers(disable_cvm=True, instance_size="Standard_D2as_v5").create_instance(
        request_for())
    props = last_body(arm)["properties"]
    assert "securityProfile" not in props
    assert props["storageProfile"]["osDisk"]["managedDisk"] == {
        "storageAccountType": "Premium_LRS"}
    await providers(enable_secure_boot=True, root_volume_size=40).create_instance(request_for())
    props = last_body(arm)["properties"]
    assert props["securityProfile"]["uefiSettings"] == {
        "secureBootEnabled": True, "vTpmEnabled": True}
    assert props["storageProfile"]["osDisk"]["diskSizeGB"] == 40


async def test_community_gallery_image_and_annotation(
    arm: ArmServer, providers: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    provider = providers(image_id=community_image())
    await provider.create_instance(request_for())
    assert last_body(arm)["properties"]["storageProfile"]["imageReference"] == {
        "communityGalleryImageId": community_image()}
    await provider.verify_config()
    assert arm.calls("GET", "/communityGalleries/cocopodvm-d0e4f35f/images/podvm_image0/"
                     "versions/2026.07.27")
    managed = arm.state.resource_id("Microsoft.Compute", "images", "podvm-image")
    with caplog.at_level(logging.INFO):
        await provider.create_instance(request_for(spec=InstanceSpec(image=managed)))
    assert last_body(arm)["properties"]["storageProfile"]["imageReference"] == {"id": managed}
    assert f"Choosing {managed} from annotation" in caplog.text
    missing = managed.replace("podvm-image", "gone")
    with pytest.raises(InvalidSpec, match="gone"):
        await provider.create_instance(request_for(spec=InstanceSpec(image=missing)))


async def test_public_ip_first_and_nsg(arm: ArmServer, providers: Factory) -> None:
    nsg = arm.state.resource_id("Microsoft.Network", "networkSecurityGroups", "pods-nsg")
    provider = providers(use_public_ip=True, nsg_id=nsg)
    request = request_for()
    instance = await provider.create_instance(request)
    [nic] = last_body(arm)["properties"]["networkProfile"]["networkInterfaceConfigurations"]
    assert nic["properties"]["networkSecurityGroup"] == {"id": nsg}
    [ipc] = nic["properties"]["ipConfigurations"]
    assert ipc["properties"]["publicIPAddressConfiguration"] == {
        "name": f"{request.name}-net", "properties": {"deleteOption": "Delete"}}
    public, private = instance.ips
    assert public == ip_address("20.30.0.1")
    assert private in ip_network(arm.state.subnet_cidr)
    await provider.verify_config()
    assert arm.calls("GET", "/networkSecurityGroups/pods-nsg")
    await provider.delete_instance(instance.id)
    assert arm.state.residue(request.name) == set()


async def test_tags_carry_custom_and_logical_keys(arm: ArmServer, providers: Factory) -> None:
    provider = providers(tags={"team": "blue", NODE_TAG: "overridden"})
    request = request_for("node-7")
    instance = await provider.create_instance(request)
    tags = last_body(arm)["tags"]
    assert tags["team"] == "blue"
    assert tags[NODE_TAG] == "node-7"  # the request's tags win over TAGS
    assert tags[SANDBOX_TAG] == request.sandbox_id
    [listed] = await provider.list_instances({"team": "blue", NODE_TAG: "node-7"})
    assert listed.id == instance.id and listed.ips == instance.ips
    assert await provider.list_instances({"team": "red"}) == []


async def test_user_data_over_64k_is_refused_before_calling_azure(
    arm: ArmServer, providers: Factory
) -> None:
    provider = providers()
    fits = bytes(64 * 1024 // 4 * 3)  # exactly 64 KiB in base64
    await provider.create_instance(request_for(user_data=fits))
    before = len(arm.seen)
    with pytest.raises(InvalidSpec, match="64 KiB"):
        await provider.create_instance(request_for(user_data=fits + b"x"))
    assert len(arm.seen) == before


async def test_delete_twice_and_unknown(arm: ArmServer, providers: Factory) -> None:
    provider = providers()
    request = request_for()
    instance = await provider.create_instance(request)
    await provider.delete_instance(instance.id)
    await provider.delete_instance(instance.id)
    assert [s.status for s in arm.calls("DELETE", "/virtualMachines/")] == [202, 204]
    assert arm.state.residue(request.name) == set()
    await provider.delete_instance("not-an-arm-id")


async def test_throttling_is_retried_with_retry_after(
    arm: ArmServer, providers: Factory
) -> None:
    provider = providers()
    await provider.list_instances({})  # token and clients ready
    arm.state.faults.throttle_next = 2
    instance = await provider.create_instance(request_for())
    assert instance.ips
    assert [s.status for s in arm.seen].count(429) == 2


async def test_quota_and_sku_errors_are_clear(arm: ArmServer, providers: Factory) -> None:
    arm.state.faults.quota_sizes.add("Standard_DC4as_v5")
    arm.state.faults.unavailable_sizes.add("Standard_DC8as_v5")
    provider = providers()
    request = request_for(spec=InstanceSpec(instance_type="Standard_DC4as_v5"))
    with pytest.raises(QuotaExceeded, match=r"size Standard_DC4as_v5.*OperationNotAllowed"):
        await provider.create_instance(request)
    with pytest.raises(InvalidSpec, match=r"Standard_DC8as_v5.*SkuNotAvailable"):
        await provider.create_instance(
            request_for(spec=InstanceSpec(instance_type="Standard_DC8as_v5")))
    assert arm.state.vms == {} and arm.state.nics == {}


async def test_failed_operation_releases_the_vm_nic_and_disk(
    arm: ArmServer, providers: Factory
) -> None:
    arm.state.faults.fail_operation = "AllocationFailed"
    request = request_for()
    with pytest.raises(QuotaExceeded, match="AllocationFailed"):
        await providers().create_instance(request)
    assert arm.state.residue(request.name) == set()


async def test_create_interrupted_after_the_nic_was_made(
    arm: ArmServer, providers: Factory
) -> None:
    """An adaptor stopped mid-create left the NIC and OS disk of the VM, but no VM: the
    next create of that sandbox removes them by name and makes exactly one VM."""
    request = request_for()
    provider = providers()
    first = await provider.create_instance(request)
    vm = arm.state.vms.pop(request.name.lower())  # the VM never came to be ...
    for item in (arm.state.nics[f"{request.name}-net".lower()],
                 arm.state.disks[f"{request.name}-disk".lower()]):
        item.pop("managedBy", None)  # ... its NIC and disk did, held by nobody
        item.get("properties", {}).pop("virtualMachine", None)
    stale_ip = first.ips[0]
    again = await providers().create_instance(request)
    assert again.id == vm["id"]
    assert again.ips != (stale_ip,)  # a new NIC, not the stale one
    assert arm.calls("DELETE", f"/networkInterfaces/{request.name}-net")
    assert arm.calls("DELETE", f"/disks/{request.name}-disk")
    assert [i.id for i in await provider.list_instances({SANDBOX_TAG: request.sandbox_id})] \
        == [vm["id"]]
    assert len(arm.state.nics) == 1 and len(arm.state.disks) == 1


async def test_attempt_gets_its_own_vm_name(arm: ArmServer, providers: Factory) -> None:
    provider = providers()
    request = request_for(attempt=2)
    instance = await provider.create_instance(request)
    assert instance.name == request.name
    assert instance.id.endswith(f"/virtualMachines/{request.name}-2")


async def test_verify_config_names_what_is_wrong(arm: ArmServer, providers: Factory) -> None:
    with pytest.raises(ConfigError, match="resource group"):
        await providers(resource_group="other-rg").verify_config()
    with pytest.raises(ConfigError, match="subnet"):
        await providers(subnet_id=arm.state.resource_id(
            "Microsoft.Network", "virtualNetworks", "vnet-1") + "/subnets/nope").verify_config()
    with pytest.raises(ConfigError, match="image"):
        await providers(image_id="/CommunityGalleries/g/Images/i/Versions/9").verify_config()
    with pytest.raises(ConfigError, match="confidential computing"):
        await providers(instance_size="Standard_D2as_v5").verify_config()
    await providers(instance_size="Standard_D2as_v5", disable_cvm=True).verify_config()
    with pytest.raises(ConfigError, match="not offered"):
        await providers(instance_size="Standard_Nope").verify_config()
    with pytest.raises(ConfigError, match="credentials rejected"):
        await providers(client_secret="wrong").verify_config()
    assert not arm.calls("PUT", "")


async def test_catalogue_for_the_allow_list(arm: ArmServer, providers: Factory) -> None:
    catalogue = await providers(
        instance_sizes=("Standard_DC4as_v5", "Standard_DC2as_v5")).instance_types()
    assert catalogue.default == "Standard_DC2as_v5"
    assert catalogue.allowed == ("Standard_DC4as_v5", "Standard_DC2as_v5")
    assert [(s.name, s.vcpus, s.memory_mib) for s in catalogue.specs] == [
        ("Standard_DC4as_v5", 4, 16384), ("Standard_DC2as_v5", 2, 8192)]


async def test_list_pages_through_next_link(arm: ArmServer, providers: Factory) -> None:
    arm.state.page_size = 2
    provider = providers()
    made = {(await provider.create_instance(request_for())).id for _ in range(5)}
    assert {i.id for i in await provider.list_instances({NODE_TAG: "node-1"})} == made
    assert all(i.ips for i in await provider.list_instances({}))


async def test_no_secret_in_logs(
    arm: ArmServer, providers: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The SDK's own loggers too: an adaptor run in this process (other tests) quiets them.
    for name in ("azure", "msal"):
        caplog.set_level(logging.DEBUG, logger=name)
    provider = providers()
    instance = await provider.create_instance(request_for())
    await provider.delete_instance(instance.id)
    text = caplog.text
    assert "Request URL" in text and "Authorization" in text  # the SDK's own logging ran
    assert arm.state.tokens
    for secret in (arm.state.client_secret, *arm.state.tokens,
                   base64.b64encode(USER_DATA).decode()[:40]):
        assert secret not in text
