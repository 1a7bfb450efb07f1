"""EBS volumes of a pod on moto_server: validated before RunInstances, attached as
``/dev/xvdb``, ``/dev/xvdc``... after the instance runs, and detached but kept (with their
tags, size and id) when the instance is deleted."""

from __future__ import annotations

from typing import Any

import pytest

from providers.aws.volumes import ebs_device_name
from providers.base import InstanceSpec, InvalidSpec
from tests.providers.aws.conftest import ProviderFactory, World, alive_ids, make_request
from tests.providers.aws.ec2proxy import Ec2Proxy


def make_volume(ec2: Any, world: World, name: str) -> str:
    subnet = ec2.describe_subnets(SubnetIds=[world.subnet_id])["Subnets"][0]
    volume = ec2.create_volume(
        AvailabilityZone=subnet["AvailabilityZone"], Size=2,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "pvc",
                                                                "Value": name}]}],
    )
    return str(volume["VolumeId"])


def volume(ec2: Any, volume_id: str) -> dict[str, Any]:
    return dict(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0])


def test_device_names() -> None:
    assert [ebs_device_name(i) for i in (0, 1, 24, 25, 26, 50, 51)] == [
        "/dev/xvdb", "/dev/xvdc", "/dev/xvdz", "/dev/xvdba", "/dev/xvdbb", "/dev/xvdbz",
        "/dev/xvdca"]


async def test_two_volumes_attached_then_detached_intact(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, world: World, node: str
) -> None:
    first, second = make_volume(ec2, world, "data"), make_volume(ec2, world, "logs")
    provider = make_provider()
    request = make_request(node, spec=InstanceSpec(volumes=(first, second)))
    instance = await provider.create_instance(request)

    # Validated before the instance was made, attached after.
    actions = [r.action for r in proxy.requests]
    assert actions.index("DescribeVolumes") < actions.index("RunInstances")
    assert actions.index("RunInstances") < actions.index("AttachVolume")
    attaches = {r.params["VolumeId"]: r.params for r in proxy.calls("AttachVolume")}
    assert attaches[first]["Device"] == "/dev/xvdb"
    assert attaches[second]["Device"] == "/dev/xvdc"
    for volume_id, device in ((first, "/dev/xvdb"), (second, "/dev/xvdc")):
        found = volume(ec2, volume_id)
        assert found["State"] == "in-use"
        (attachment,) = found["Attachments"]
        assert (attachment["InstanceId"], attachment["Device"], attachment["State"]) == (
            instance.id, device, "attached")

    # A retried create (a restarted adaptor) finds the instance and attaches nothing twice.
    again = await provider.create_instance(request)
    assert again.id == instance.id and len(proxy.calls("AttachVolume")) == 2

    await provider.delete_instance(instance.id)
    assert alive_ids(ec2, {"Name": request.name}) == set()
    for volume_id, name in ((first, "data"), (second, "logs")):
        kept = volume(ec2, volume_id)
        assert kept["State"] == "available" and kept["Attachments"] == []
        assert kept["Size"] == 2 and {"Key": "pvc", "Value": name} in kept["Tags"]
    assert not proxy.calls("DeleteVolume")


async def test_volumes_refused_before_anything_is_made(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, world: World, node: str
) -> None:
    provider = make_provider()
    busy = make_volume(ec2, world, "busy")
    holder = await provider.create_instance(make_request(node, spec=InstanceSpec(
        volumes=(busy,))))
    cases = [
        (("/dev/sdb",), 'invalid EBS volume ID format: "/dev/sdb"'),
        (("vol-xyz",), 'invalid EBS volume ID format: "vol-xyz"'),
        ((busy,), f'EBS volume pre-validation failed: volume {busy} is in state "in-use" '
                  f"(attached to {holder.id})"),
        (("vol-0123456789abcdef0",), "InvalidVolume.NotFound"),
    ]
    for volumes, message in cases:
        request = make_request(node, spec=InstanceSpec(volumes=volumes))
        with pytest.raises(InvalidSpec) as caught:
            await provider.create_instance(request)
        assert message in str(caught.value)
        assert alive_ids(ec2, {"Name": request.name}) == set()
    assert len(proxy.calls("RunInstances")) == 1
    await provider.delete_instance(holder.id)
    assert volume(ec2, busy)["State"] == "available"


async def test_attach_polls_until_attached(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, world: World, node: str
) -> None:
    """EC2 reports ``attaching`` for a while after AttachVolume: the create waits."""
    volume_id = make_volume(ec2, world, "slow")
    slow_answers = 3

    def attaching(action: str, payload: bytes) -> bytes:
        nonlocal slow_answers
        marker = b"<status>attached</status>"
        if action == "DescribeVolumes" and marker in payload and slow_answers > 0:
            slow_answers -= 1
            return payload.replace(marker, b"<status>attaching</status>")
        return payload

    proxy.rewriters.append(attaching)
    provider = make_provider()
    instance = await provider.create_instance(make_request(node, spec=InstanceSpec(
        volumes=(volume_id,))))
    assert slow_answers == 0
    after_attach = [r.action for r in proxy.requests][
        [r.action for r in proxy.requests].index("AttachVolume") + 1:]
    assert after_attach.count("DescribeVolumes") >= 4  # three "attaching", then "attached"
    await provider.delete_instance(instance.id)
