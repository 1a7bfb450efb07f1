"""Fixtures: one moto_server per session, a recording EC2 proxy and providers per test."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from providers.aws.provider import AwsProvider
from providers.aws.settings import AwsSettings
from providers.base import (
    NODE_TAG,
    POD_NAME_TAG,
    POD_NAMESPACE_TAG,
    SANDBOX_TAG,
    InstanceRequest,
    InstanceSpec,
)
from tests.providers.aws.ec2proxy import Ec2Proxy
from tests.providers.aws.motoserver import REGION, MotoServer

# Binary, non-UTF-8 and NUL bytes: any re-encoding or double base64 would show.
USER_DATA = (
    b"#cloud-config\nwrite_files:\n- path: /run/peerpod/apf.json\n  content: '{}'\n"
    + bytes(range(256))
)
LAUNCH_TEMPLATE = "kata-test"


@dataclass(frozen=True)
class World:
    url: str
    ami: str
    other_ami: str
    ami_root_gib: int
    other_ami_root_gib: int
    subnet_id: str
    security_group_id: str


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ec2(moto: MotoServer) -> Any:
    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _root_gib(image: dict[str, Any]) -> int:
    for mapping in image["BlockDeviceMappings"]:
        if mapping["DeviceName"] == image["RootDeviceName"]:
            return int(mapping["Ebs"]["VolumeSize"])
    raise AssertionError("moto AMI without root device")


@pytest.fixture(scope="session")
def world(moto: MotoServer, ec2: Any) -> World:
    images = [
        image for image in ec2.describe_images(
            Owners=["amazon"],
            Filters=[{"Name": "name", "Values": ["amzn-ami-hvm-*", "ubuntu/images/hvm-ssd/*"]}],
        )["Images"]
        if image.get("Platform") != "windows" and image.get("RootDeviceName")
        and image.get("BlockDeviceMappings")
    ]
    first, second = images[0], images[1]
    subnet = ec2.describe_subnets()["Subnets"][0]
    group = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [subnet["VpcId"]]}]
    )["SecurityGroups"][0]
    ec2.create_launch_template(
        LaunchTemplateName=LAUNCH_TEMPLATE,
        LaunchTemplateData={"ImageId": first["ImageId"], "InstanceType": "m6a.large"},
    )
    return World(
        url=moto.url,
        ami=first["ImageId"],
        other_ami=second["ImageId"],
        ami_root_gib=_root_gib(first),
        other_ami_root_gib=_root_gib(second),
        subnet_id=subnet["SubnetId"],
        security_group_id=group["GroupId"],
    )


@pytest.fixture
async def proxy(moto: MotoServer) -> AsyncIterator[Ec2Proxy]:
    server = Ec2Proxy(upstream=moto.url)
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


@pytest.fixture
def node() -> str:
    return f"node-{uuid.uuid4().hex[:10]}"


def base_settings(world: World, endpoint: str, **overrides: Any) -> AwsSettings:
    settings = AwsSettings(
        access_key_id="testing",
        secret_key="testing",
        region=REGION,
        image_id=world.ami,
        subnet_id=world.subnet_id,
        security_group_ids=(world.security_group_id,),
        key_name="podvm-key",
        endpoint_url=endpoint,
        imds_url="",
        tags={"team": "peerpods", "env": "test"},
    )
    return dataclasses.replace(settings, **overrides)


ProviderFactory = Callable[..., AwsProvider]


@pytest.fixture
async def make_provider(
    world: World, proxy: Ec2Proxy, node: str
) -> AsyncIterator[ProviderFactory]:
    made: list[AwsProvider] = []

    def factory(*, endpoint: str | None = None, **overrides: Any) -> AwsProvider:
        settings = base_settings(world, endpoint or proxy.url, **overrides)
        provider = AwsProvider(settings, node_name=node, poll_interval=0.05)
        made.append(provider)
        return provider

    try:
        yield factory
    finally:
        for provider in made:
            await provider.aclose()


def make_request(
    node: str, *, sandbox_id: str | None = None, spec: InstanceSpec | None = None,
    user_data: bytes = USER_DATA, pod: str = "nginx",
) -> InstanceRequest:
    sid = sandbox_id or uuid.uuid4().hex + uuid.uuid4().hex
    return InstanceRequest(
        name=f"podvm-{pod}-{sid[:8]}",
        sandbox_id=sid,
        pod_name=pod,
        pod_namespace="default",
        user_data=user_data,
        spec=spec or InstanceSpec(instance_type=None),
        tags={NODE_TAG: node, SANDBOX_TAG: sid, POD_NAME_TAG: pod, POD_NAMESPACE_TAG: "default"},
    )


def alive_ids(ec2: Any, tags: Mapping[str, str]) -> set[str]:
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
    filters.append({"Name": "instance-state-name", "Values": ["pending", "running"]})
    found: set[str] = set()
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            found.update(i["InstanceId"] for i in reservation["Instances"])
    return found

