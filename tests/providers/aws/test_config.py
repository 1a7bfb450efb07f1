"""verify_config and the instance-type catalogue against moto_server."""

from __future__ import annotations

import re
from typing import Any

import pytest

from providers.base import ConfigError, InstanceTypeInfo
from tests.providers.aws.conftest import LAUNCH_TEMPLATE, ProviderFactory, World
from tests.providers.aws.ec2proxy import Ec2Proxy


async def test_verify_config_accepts_existing_resources(
    make_provider: ProviderFactory, proxy: Ec2Proxy
) -> None:
    await make_provider().verify_config()
    assert proxy.calls("DescribeImages") and proxy.calls("DescribeSubnets")
    assert proxy.calls("DescribeSecurityGroups")


async def test_verify_config_unknown_ami_names_it(make_provider: ProviderFactory) -> None:
    with pytest.raises(ConfigError, match="ami-0123456789abcdef0"):
        await make_provider(image_id="ami-0123456789abcdef0").verify_config()


async def test_verify_config_needs_uefi_for_cvm(
    make_provider: ProviderFactory, proxy: Ec2Proxy, world: World
) -> None:
    def legacy_bios(action: str, body: bytes) -> bytes:
        if action != "DescribeImages":
            return body
        return re.sub(rb"<bootMode>[^<]*</bootMode>", b"<bootMode>legacy-bios</bootMode>", body)

    proxy.rewriters.append(legacy_bios)
    with pytest.raises(ConfigError, match=f"{world.ami}.*legacy-bios"):
        await make_provider().verify_config()
    await make_provider(disable_cvm=True).verify_config()


async def test_verify_config_unknown_subnet_and_groups(make_provider: ProviderFactory) -> None:
    with pytest.raises(ConfigError, match="subnet-0badbad0"):
        await make_provider(subnet_id="subnet-0badbad0").verify_config()
    with pytest.raises(ConfigError, match="sg-0badbad0"):
        await make_provider(security_group_ids=("sg-0badbad0",)).verify_config()


async def test_verify_config_launch_template(make_provider: ProviderFactory) -> None:
    await make_provider(use_launch_template=True,
                        launch_template_name=LAUNCH_TEMPLATE).verify_config()
    with pytest.raises(ConfigError, match="launch template no-such-template"):
        await make_provider(use_launch_template=True,
                            launch_template_name="no-such-template").verify_config()


async def test_instance_types_default_only(make_provider: ProviderFactory) -> None:
    catalogue = await make_provider().instance_types()
    assert catalogue.default == "m6a.large"
    assert catalogue.allowed == ()
    assert catalogue.specs == (InstanceTypeInfo("m6a.large", vcpus=2, memory_mib=8192, gpus=0),)


async def test_instance_types_allow_list(make_provider: ProviderFactory, ec2: Any) -> None:
    names = ("m6a.large", "m6a.2xlarge", "g4dn.xlarge")
    catalogue = await make_provider(instance_types=names).instance_types()
    assert catalogue.allowed == names
    expected = []
    for item in ec2.describe_instance_types(InstanceTypes=list(names))["InstanceTypes"]:
        gpus = sum(g["Count"] for g in item.get("GpuInfo", {}).get("Gpus", []))
        expected.append(InstanceTypeInfo(item["InstanceType"], item["VCpuInfo"]["DefaultVCpus"],
                                         item["MemoryInfo"]["SizeInMiB"], gpus))
    assert set(catalogue.specs) == set(expected)
    assert [s.name for s in catalogue.specs] == list(names)
    assert {s.name: s.gpus for s in catalogue.specs}["g4dn.xlarge"] == 1


async def test_instance_types_unknown_type_is_config_error(
    make_provider: ProviderFactory,
) -> None:
    with pytest.raises(ConfigError, match=r"m6a\.bogus"):
        await make_provider(instance_types=("m6a.large", "m6a.bogus")).instance_types()
