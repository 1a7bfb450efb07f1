"""The AWS provider against moto_server, through the recording proxy."""

from __future__ import annotations

import base64
import dataclasses
from datetime import datetime
from ipaddress import ip_address
from typing import Any

import pytest

from providers.aws.params import client_token
from providers.base import (
    NODE_TAG,
    SANDBOX_TAG,
    InstanceSpec,
    InvalidSpec,
    Provider,
    ProviderError,
    ProviderUnavailable,
)
from tests.providers.aws.conftest import (
    LAUNCH_TEMPLATE,
    USER_DATA,
    ProviderFactory,
    World,
    alive_ids,
    make_request,
)
from tests.providers.aws.ec2proxy import Ec2Proxy, Fault


def describe(ec2: Any, instance_id: str) -> dict[str, Any]:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    result: dict[str, Any] = reservations[0]["Instances"][0]
    return result


def user_data_of(ec2: Any, instance_id: str) -> bytes:
    value = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(value["UserData"]["Value"])


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def sent_tags(params: dict[str, str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    index = 1
    while f"TagSpecification.1.Tag.{index}.Key" in params:
        tags[params[f"TagSpecification.1.Tag.{index}.Key"]] = params.get(
            f"TagSpecification.1.Tag.{index}.Value", "")
        index += 1
    return tags


async def test_provider_satisfies_protocol(make_provider: ProviderFactory) -> None:
    assert isinstance(make_provider(), Provider)


async def test_create_confidential_vm_with_defaults(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, world: World, node: str
) -> None:
    provider = make_provider()
    request = make_request(node)
    instance = await provider.create_instance(request)

    (run,) = proxy.calls("RunInstances")
    sent = run.params
    assert sent["MinCount"] == "1" and sent["MaxCount"] == "1"
    assert sent["CpuOptions.AmdSevSnp"] == "enabled"
    assert sent["InstanceType"] == "m6a.large"
    assert sent["ImageId"] == world.ami
    assert sent["SubnetId"] == world.subnet_id
    assert sent["SecurityGroupId.1"] == world.security_group_id
    assert sent["KeyName"] == "podvm-key"
    assert sent["ClientToken"] == client_token(request.sandbox_id)
    assert len(sent["ClientToken"]) <= 64 and sent["ClientToken"].isascii()
    # base64 exactly once on the wire
    assert base64.b64decode(sent["UserData"]) == USER_DATA
    assert sent["BlockDeviceMapping.1.Ebs.VolumeSize"] == str(max(30, world.ami_root_gib))
    tags = sent_tags(sent)
    assert tags["Name"] == request.name
    assert tags[NODE_TAG] == node and tags[SANDBOX_TAG] == request.sandbox_id
    assert tags["team"] == "peerpods" and tags["env"] == "test"
    assert "NetworkInterface.1.AssociatePublicIpAddress" not in sent

    described = describe(ec2, instance.id)
    assert instance.name == request.name
    assert instance.ips == (ip_address(described["PrivateIpAddress"]),)
    assert described["InstanceType"] == "m6a.large"
    assert described["ImageId"] == world.ami
    assert described["BlockDeviceMappings"][0]["DeviceName"] == sent[
        "BlockDeviceMapping.1.DeviceName"]
    assert tags_of(described)["Name"] == request.name
    assert tags_of(described)[NODE_TAG] == node
    assert user_data_of(ec2, instance.id) == USER_DATA


async def test_create_without_cvm_with_type_and_image_override(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, world: World, node: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = make_provider(disable_cvm=True, root_volume_size=1)
    spec = InstanceSpec(instance_type="m6a.xlarge", image=world.other_ami)
    caplog.set_level("INFO", logger="providers.aws")
    instance = await provider.create_instance(make_request(node, spec=spec))

    (run,) = proxy.calls("RunInstances")
    assert not any(key.startswith("CpuOptions") for key in run.params)
    assert run.params["ImageId"] == world.other_ami
    assert run.params["BlockDeviceMapping.1.Ebs.VolumeSize"] == str(world.other_ami_root_gib)
    described = describe(ec2, instance.id)
    assert described["InstanceType"] == "m6a.xlarge"
    assert described["ImageId"] == world.other_ami
    assert f"Choosing {world.other_ami}" in caplog.text
    assert USER_DATA.decode("latin-1") not in caplog.text


async def test_create_with_public_ip(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, world: World, node: str
) -> None:
    provider = make_provider(use_public_ip=True)
    instance = await provider.create_instance(make_request(node))

    (run,) = proxy.calls("RunInstances")
    sent = run.params
    assert sent["NetworkInterface.1.AssociatePublicIpAddress"] == "true"
    assert sent["NetworkInterface.1.DeviceIndex"] == "0"
    assert sent["NetworkInterface.1.DeleteOnTermination"] == "true"
    assert sent["NetworkInterface.1.SubnetId"] == world.subnet_id
    assert sent["NetworkInterface.1.SecurityGroupId.1"] == world.security_group_id
    assert "SubnetId" not in sent and "SecurityGroupId.1" not in sent
    described = describe(ec2, instance.id)
    assert described["State"]["Name"] == "running"
    assert instance.ips[0] == ip_address(described["PublicIpAddress"])
    assert proxy.calls("DescribeInstances")  # waited for running


async def test_create_from_launch_template(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    # ROOT_VOLUME_SIZE=0: nothing beyond the template (with a size, see test_launch_template).
    provider = make_provider(use_launch_template=True, launch_template_name=LAUNCH_TEMPLATE,
                             root_volume_size=0)
    request = make_request(node)
    instance = await provider.create_instance(request)

    (run,) = proxy.calls("RunInstances")
    sent = run.params
    assert sent["LaunchTemplate.LaunchTemplateName"] == LAUNCH_TEMPLATE
    for absent in ("ImageId", "InstanceType", "SubnetId", "KeyName", "CpuOptions.AmdSevSnp",
                   "BlockDeviceMapping.1.DeviceName", "SecurityGroupId.1"):
        assert absent not in sent
    assert sent_tags(sent)["Name"] == request.name
    assert not proxy.calls("DescribeImages")
    assert user_data_of(ec2, instance.id) == USER_DATA
    assert describe(ec2, instance.id)["InstanceType"] == "m6a.large"


async def test_unknown_image_override_is_invalid_spec(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    provider = make_provider()
    request = make_request(node, spec=InstanceSpec(image="ami-0badbadbadbadbad0"))
    with pytest.raises(InvalidSpec, match="ami-0badbadbadbadbad0"):
        await provider.create_instance(request)
    assert not proxy.calls("RunInstances")
    assert alive_ids(ec2, {NODE_TAG: node}) == set()


async def test_unknown_instance_type_is_invalid_spec(
    make_provider: ProviderFactory, ec2: Any, node: str
) -> None:
    provider = make_provider()
    request = make_request(node, spec=InstanceSpec(instance_type="m6a.nonsense"))
    with pytest.raises(InvalidSpec, match=r"m6a\.nonsense"):
        await provider.create_instance(request)
    assert alive_ids(ec2, {NODE_TAG: node}) == set()


async def test_delete_twice_and_delete_unknown(
    make_provider: ProviderFactory, ec2: Any, node: str
) -> None:
    provider = make_provider()
    instance = await provider.create_instance(make_request(node))
    await provider.delete_instance(instance.id)
    assert describe(ec2, instance.id)["State"]["Name"] in ("shutting-down", "terminated")
    await provider.delete_instance(instance.id)
    await provider.delete_instance("i-0123456789abcdef0")
    assert alive_ids(ec2, {NODE_TAG: node}) == set()


async def test_delete_twice_with_public_ip(
    make_provider: ProviderFactory, ec2: Any, node: str
) -> None:
    provider = make_provider(use_public_ip=True)
    instance = await provider.create_instance(make_request(node))
    await provider.delete_instance(instance.id)
    await provider.delete_instance(instance.id)
    assert alive_ids(ec2, {NODE_TAG: node}) == set()


async def test_list_finds_exactly_this_nodes_instances(
    make_provider: ProviderFactory, ec2: Any, node: str
) -> None:
    provider = make_provider()
    mine = [await provider.create_instance(make_request(node)) for _ in range(3)]
    other_node = node + "-other"
    others = [await provider.create_instance(make_request(other_node)) for _ in range(2)]

    listed = await provider.list_instances({NODE_TAG: node})
    assert {i.id for i in listed} == {i.id for i in mine}
    for item in listed:
        assert item.tags[NODE_TAG] == node
        assert item.name.startswith("podvm-nginx-")
        assert isinstance(item.created_at, datetime) and item.created_at.tzinfo is not None
        assert item.state in ("pending", "running")
        assert item.ips

    await provider.delete_instance(mine[0].id)
    listed = await provider.list_instances({NODE_TAG: node})
    assert {i.id for i in listed} == {i.id for i in mine[1:]}
    assert {i.id for i in await provider.list_instances({NODE_TAG: other_node})} == {
        i.id for i in others}
    one = mine[1]
    assert [i.id for i in await provider.list_instances(
        {NODE_TAG: node, SANDBOX_TAG: one.tags[SANDBOX_TAG]})] == [one.id]


async def test_list_follows_pages(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, world: World, node: str
) -> None:
    for _ in range(101):  # moto pages describe_instances at 100 reservations
        ec2.run_instances(
            ImageId=world.ami, InstanceType="m6a.large", MinCount=1, MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": NODE_TAG, "Value": node}]}],
        )
    provider = make_provider()
    listed = await provider.list_instances({NODE_TAG: node})
    assert len({i.id for i in listed}) == 101
    assert any("NextToken" in r.params for r in proxy.calls("DescribeInstances"))
    ec2.terminate_instances(InstanceIds=[item.id for item in listed])
    assert alive_ids(ec2, {NODE_TAG: node}) == set()


async def test_same_sandbox_twice_gives_one_instance(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    provider = make_provider()
    request = make_request(node)
    first = await provider.create_instance(request)
    second = await provider.create_instance(request)
    assert second.id == first.id
    assert second.ips == first.ips
    assert alive_ids(ec2, {SANDBOX_TAG: request.sandbox_id}) == {first.id}
    assert len(proxy.calls("RunInstances")) == 1


async def test_lost_run_response_is_retried_with_the_same_token(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    # The first RunInstances reaches EC2 but its answer is lost (500): the retry carries
    # the same ClientToken, and EC2 answers it with the instance already made.
    proxy.honour_client_token = True
    proxy.faults.append(Fault(code="InternalError", status=500, action="RunInstances",
                              limit=1, after_forward=True))
    provider = make_provider()
    request = make_request(node)
    instance = await provider.create_instance(request)

    runs = proxy.calls("RunInstances")
    assert len(runs) == 2 and runs[0].injected == "InternalError"
    assert runs[0].params["ClientToken"] == runs[1].params["ClientToken"]
    assert alive_ids(ec2, {SANDBOX_TAG: request.sandbox_id}) == {instance.id}


async def test_address_not_ready_fails_and_releases_the_instance(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    def zero_address(action: str, body: bytes) -> bytes:
        if action != "RunInstances":
            return body
        text = body.decode()
        start = text.index("<privateIpAddress>") + len("<privateIpAddress>")
        end = text.index("</privateIpAddress>", start)
        return text.replace(text[start:end], "0.0.0.0").encode()

    proxy.rewriters.append(zero_address)
    provider = make_provider()
    request = make_request(node)
    with pytest.raises(ProviderError, match="address not ready"):
        await provider.create_instance(request)
    assert len(proxy.calls("TerminateInstances")) == 1
    assert alive_ids(ec2, {SANDBOX_TAG: request.sandbox_id}) == set()


async def test_unreachable_endpoint_is_provider_unavailable(
    make_provider: ProviderFactory, node: str
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = make_provider(endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(ProviderUnavailable):
        await provider.list_instances({NODE_TAG: node})


async def test_each_creation_of_a_sandbox_has_its_own_token(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    # EC2 answers a token it saw before with that instance, even terminated: a create after
    # a delete (attempt 1) must send a new token and get a new instance.
    proxy.honour_client_token = True
    provider = make_provider()
    request = make_request(node)
    first = await provider.create_instance(request)
    await provider.delete_instance(first.id)
    again = dataclasses.replace(request, attempt=1)
    second = await provider.create_instance(again)
    tokens = [run.params["ClientToken"] for run in proxy.calls("RunInstances")]
    assert tokens == [client_token(request.sandbox_id), client_token(request.sandbox_id, 1)]
    assert tokens[0] != tokens[1]
    assert second.id != first.id
    assert alive_ids(ec2, {SANDBOX_TAG: request.sandbox_id}) == {second.id}


async def test_terminated_answer_to_run_instances_is_an_error(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str
) -> None:
    def terminated(action: str, body: bytes) -> bytes:
        if action != "RunInstances":
            return body
        return body.replace(b"<code>0</code><name>pending</name>",
                            b"<code>48</code><name>terminated</name>")

    proxy.rewriters.append(terminated)
    provider = make_provider()
    request = make_request(node)
    with pytest.raises(ProviderError, match=r"made earlier for sandbox .* is terminated "
                       r"\(RunInstances reused the idempotency token of attempt 0\)"):
        await provider.create_instance(request)
    assert len(proxy.calls("RunInstances")) == 1
