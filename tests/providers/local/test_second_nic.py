"""EXTERNAL_NETWORK_VIA_PODVM on the local provider: the pod VM's second NIC ``eth1``.

Upstream has no local provider; the second NIC mirrors its AWS one
(cloud-providers/aws/provider.go, createAddonNICforInstance: an ENI in the pod VMs' subnet,
no route of its own), which podnetwork/common.go getSecondaryInterfaceDetails picks as
"same subnet as the primary".
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from adaptor.tls import AgentTLS
from providers.base import InstanceRequest, InstanceSpec, InvalidSpec
from providers.local import layout
from tests.providers.local.conftest import LocalSetup, request


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True,
                          check=False).returncode == 0


def multi_nic_request(agent_tls: AgentTLS) -> InstanceRequest:
    return dataclasses.replace(request(agent_tls), spec=InstanceSpec(multi_nic=True))


@pytest.mark.root
@pytest.mark.netns
async def test_second_nic_in_the_vm_namespace(
    netns_provider: LocalSetup, agent_tls: AgentTLS
) -> None:
    provider, settings = netns_provider.provider, netns_provider.settings
    instance = await provider.create_instance(multi_nic_request(agent_tls))
    vm = layout.vm_netns(instance.id)
    record = json.loads((Path(settings.state_dir) / instance.id / "instance.json").read_text())
    second = IPv4Address(record["second_address"])
    subnet = IPv4Network(settings.subnet)
    assert second in subnet and second != instance.ips[0]
    assert instance.ips == (IPv4Address(record["address"]),)  # the tunnel's address only
    assert f"inet {second}/{subnet.prefixlen} " in ip("-n", vm, "addr", "show", "eth1")
    assert "default" not in ip("-n", vm, "route", "show", "dev", "eth1")  # no own default
    assert ip("netns", "exec", vm, "sysctl", "-n", "net.ipv4.conf.all.arp_ignore").strip() == "1"
    veth = layout.second_host_veth(instance.id)
    assert f"master {settings.bridge} " in ip("link", "show", "dev", veth)
    assert link_exists(veth)

    # the next VM gets neither address
    other = await provider.create_instance(request(agent_tls))
    assert other.ips[0] not in (instance.ips[0], second)

    await provider.delete_instance(instance.id)
    assert not link_exists(veth)
    await provider.delete_instance(other.id)


async def test_second_nic_needs_namespaces(
    loopback_provider: LocalSetup, agent_tls: AgentTLS
) -> None:
    with pytest.raises(InvalidSpec, match=r"second NIC \(multi_nic\) only with network namespaces"):
        await loopback_provider.provider.create_instance(multi_nic_request(agent_tls))
    assert await loopback_provider.provider.list_instances({}) == []
