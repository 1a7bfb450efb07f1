"""RunInstances with a launch template keeps the root volume size, as upstream does.

Upstream v0.22.0 cloud-providers/aws/provider.go: ``NewProvider`` reads the root device name
and size of PODVM_AMI_ID whenever ROOT_VOLUME_SIZE > 0, and ``CreateInstance`` adds
``BlockDeviceMappings`` after building the launch-template input as well as the plain one.
Tested against moto_server (through the recording EC2 proxy).
"""

from __future__ import annotations

from typing import Any

from tests.providers.aws.conftest import (
    LAUNCH_TEMPLATE,
    USER_DATA,
    ProviderFactory,
    World,
    make_request,
)
from tests.providers.aws.ec2proxy import Ec2Proxy
from tests.providers.aws.test_provider import describe, sent_tags, user_data_of


async def test_launch_template_sends_the_root_volume(
    make_provider: ProviderFactory, proxy: Ec2Proxy, ec2: Any, node: str, world: World
) -> None:
    provider = make_provider(use_launch_template=True, launch_template_name=LAUNCH_TEMPLATE,
                             root_volume_size=40)
    request = make_request(node)
    instance = await provider.create_instance(request)

    (run,) = proxy.calls("RunInstances")
    sent = run.params
    assert sent["LaunchTemplate.LaunchTemplateName"] == LAUNCH_TEMPLATE
    image = ec2.describe_images(ImageIds=[world.ami])["Images"][0]
    assert sent["BlockDeviceMapping.1.DeviceName"] == image["RootDeviceName"]
    assert sent["BlockDeviceMapping.1.Ebs.VolumeSize"] == str(max(40, world.ami_root_gib))
    # Everything else still comes from the template.
    for absent in ("ImageId", "InstanceType", "SubnetId", "KeyName", "CpuOptions.AmdSevSnp",
                   "SecurityGroupId.1"):
        assert absent not in sent
    assert sent_tags(sent)["Name"] == request.name
    assert user_data_of(ec2, instance.id) == USER_DATA
    described = describe(ec2, instance.id)
    assert described["BlockDeviceMappings"][0]["DeviceName"] == image["RootDeviceName"]


async def test_launch_template_root_volume_never_smaller_than_the_ami(
    make_provider: ProviderFactory, proxy: Ec2Proxy, node: str, world: World
) -> None:
    # NewProvider: "RootVolumeSize %d is less than deviceSize %d, hence updating ...".
    provider = make_provider(use_launch_template=True, launch_template_name=LAUNCH_TEMPLATE,
                             root_volume_size=1)
    await provider.create_instance(make_request(node))
    (run,) = proxy.calls("RunInstances")
    assert run.params["BlockDeviceMapping.1.Ebs.VolumeSize"] == str(max(1, world.ami_root_gib))
