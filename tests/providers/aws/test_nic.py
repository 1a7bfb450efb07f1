"""EXTERNAL_NETWORK_VIA_PODVM on AWS: the pod VM's second ENI (and Elastic IP), on moto."""

from __future__ import annotations

from typing import Any

import pytest

from providers.base import InstanceSpec, ProviderError
from tests.providers.aws.conftest import ProviderFactory, World, make_request
from tests.providers.aws.ec2proxy import Ec2Proxy, Fault

MULTI_NIC = InstanceSpec(multi_nic=True)


def nics_of(ec2: Any, instance_id: str) -> list[dict[str, Any]]:
    found = ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]
    return sorted(found, key=lambda nic: nic["Attachment"]["DeviceIndex"])


def create_nic_id(ec2: Any, instance_id: str) -> str:
    return str(nics_of(ec2, instance_id)[1]["NetworkInterfaceId"])


def named(ec2: Any, name: str) -> list[dict[str, Any]]:
    return ec2.describe_network_interfaces(
        Filters=[{"Name": "tag:Name", "Values": [name]}]
    )["NetworkInterfaces"]


async def test_second_eni_attached_at_index_1(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, world: World, node: str
) -> None:
    # Upstream: cloud-providers/aws/provider.go, CreateInstance with spec.MultiNic calls
    # createAddonNICforInstance: CreateNetworkInterface (SubnetId, Groups, Name=nic-<id>),
    # wait for running, AttachNetworkInterface DeviceIndex 1, then
    # ModifyNetworkInterfaceAttribute DeleteOnTermination=true.
    provider = make_provider()
    request = make_request(node, spec=MULTI_NIC)
    instance = await provider.create_instance(request)

    (create,) = proxy.calls("CreateNetworkInterface")
    assert create.params["SubnetId"] == world.subnet_id
    assert create.params["SecurityGroupId.1"] == world.security_group_id
    (attach,) = proxy.calls("AttachNetworkInterface")
    assert attach.params["InstanceId"] == instance.id
    assert attach.params["DeviceIndex"] == "1"
    (modify,) = proxy.calls("ModifyNetworkInterfaceAttribute")
    assert modify.params["NetworkInterfaceId"] == create_nic_id(ec2, instance.id)
    assert modify.params["Attachment.DeleteOnTermination"] == "true"
    assert modify.params["Attachment.AttachmentId"]
    order = [r.action for r in proxy.requests]
    assert order.index("RunInstances") < order.index("CreateNetworkInterface") \
        < order.index("AttachNetworkInterface") < order.index("ModifyNetworkInterfaceAttribute")
    assert not proxy.calls("AllocateAddress")  # no public IP asked for

    primary, second = nics_of(ec2, instance.id)
    assert primary["Attachment"]["DeviceIndex"] == 0
    assert second["Attachment"]["DeviceIndex"] == 1
    # (moto ignores the Attachment of ModifyNetworkInterfaceAttribute: checked as sent above)
    assert second["SubnetId"] == world.subnet_id
    assert [g["GroupId"] for g in second["Groups"]] == [world.security_group_id]
    tags = {t["Key"]: t["Value"] for t in second["TagSet"]}
    assert tags["Name"] == f"nic-{instance.id}"
    assert tags["peerpods-sandbox"] == request.sandbox_id
    # the tunnel still goes to the primary address
    assert str(instance.ips[0]) == primary["PrivateIpAddress"]

    # a retried create of the same sandbox reuses the instance and adds no third NIC
    again = await provider.create_instance(request)
    assert again.id == instance.id
    assert len(proxy.calls("CreateNetworkInterface")) == 1
    assert len(nics_of(ec2, instance.id)) == 2
    await provider.delete_instance(instance.id)


async def test_without_multi_nic_no_eni(
    make_provider: ProviderFactory, proxy: Ec2Proxy, node: str
) -> None:
    provider = make_provider()
    instance = await provider.create_instance(make_request(node))
    assert not proxy.calls("CreateNetworkInterface")
    await provider.delete_instance(instance.id)
    assert not proxy.calls("DescribeAddresses")  # no public IP: no Elastic IP to release


async def test_public_ip_gets_an_elastic_ip_released_at_delete(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    # Upstream: aws/provider.go, createElasticIPforInstance (AllocateAddress Domain=vpc,
    # Name=eip-<id>; AssociateAddress with the new NIC, AllowReassociation) and, in
    # DeleteInstance, deleteElasticIPforInstance (filter instance-id; disassociate, release).
    provider = make_provider(use_public_ip=True)
    instance = await provider.create_instance(make_request(node, spec=MULTI_NIC))
    (allocate,) = proxy.calls("AllocateAddress")
    assert allocate.params["Domain"] == "vpc"
    (associate,) = proxy.calls("AssociateAddress")
    second = nics_of(ec2, instance.id)[1]
    assert associate.params["NetworkInterfaceId"] == second["NetworkInterfaceId"]
    assert associate.params["AllowReassociation"] == "true"
    addresses = ec2.describe_addresses(
        Filters=[{"Name": "tag:Name", "Values": [f"eip-{instance.id}"]}])["Addresses"]
    assert [a["NetworkInterfaceId"] for a in addresses] == [second["NetworkInterfaceId"]]

    await provider.delete_instance(instance.id)
    assert proxy.calls("DisassociateAddress") and proxy.calls("ReleaseAddress")
    allocation = addresses[0]["AllocationId"]
    remaining = ec2.describe_addresses()["Addresses"]
    assert allocation not in {a["AllocationId"] for a in remaining}


async def test_failed_attach_removes_eni_and_instance(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    # Upstream deletes the NIC when AttachNetworkInterface fails and returns the partial
    # instance for the caller to delete; here the provider releases both itself.
    proxy.faults.append(Fault(code="InvalidParameterValue", status=400,
                              action="AttachNetworkInterface"))
    provider = make_provider()
    request = make_request(node, spec=MULTI_NIC)
    with pytest.raises(ProviderError):
        await provider.create_instance(request)
    assert len(proxy.calls("RunInstances")) == 1
    (terminate,) = proxy.calls("TerminateInstances")
    (delete,) = proxy.calls("DeleteNetworkInterface")
    instance_id = terminate.params["InstanceIds.1"] if "InstanceIds.1" in terminate.params \
        else terminate.params["InstanceId.1"]
    assert named(ec2, f"nic-{instance_id}") == []
    assert delete.params["NetworkInterfaceId"]
