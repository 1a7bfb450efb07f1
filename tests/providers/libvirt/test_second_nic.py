"""EXTERNAL_NETWORK_VIA_PODVM on libvirt: a second interface on LIBVIRT_NET.

Upstream's libvirt provider ignores ``MultiNic`` (cloud-providers/libvirt/provider.go,
``CreateInstance``; only aws/provider.go and alibabacloud attach a second NIC), so a libvirt
pod VM has no interface for podnetwork/common.go ``setupExternalNetwork`` to move. Here the
domain gets one, like the first on the configured network.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from ipaddress import ip_address

from providers.libvirt.addresses import parse_interface_addresses
from providers.libvirt.domain import build_domain_xml, interface_macs
from tests.providers.libvirt.conftest import DriverEnv, make_request
from tests.providers.libvirt.test_builders import config


def interfaces(root: ET.Element) -> list[ET.Element]:
    return root.findall("devices/interface")


def test_domain_xml_has_a_second_interface_on_the_network() -> None:
    for arch, machine in (("x86_64", ""), ("s390x", "s390-ccw-virtio"), ("aarch64", "virt")):
        one = ET.fromstring(build_domain_xml(config(arch=arch, machine=machine)))
        two = ET.fromstring(build_domain_xml(config(arch=arch, machine=machine, nics=2,
                                                    network="podnet")))
        assert len(interfaces(one)) == 1
        assert len(interfaces(two)) == 2
        for iface, first in zip(interfaces(two), interfaces(one) * 2, strict=True):
            assert iface.get("type") == "network"
            assert iface.find("source").get("network") == "podnet"  # type: ignore[union-attr]
            assert [c.tag for c in iface] == [c.tag for c in first]  # same model/driver


def test_first_nics_address_comes_first() -> None:
    # The tunnel goes to the first address (adaptor.network.plan.tunnel_remote); the
    # second NIC's address may sort lower but must not come first.
    report = {
        "vnet1": {"hwaddr": "52:54:00:00:00:02", "addrs": [{"addr": "192.168.122.5"}]},
        "vnet0": {"hwaddr": "52:54:00:00:00:01", "addrs": [{"addr": "192.168.122.9"}]},
    }
    macs = ("52:54:00:00:00:01", "52:54:00:00:00:02")
    assert parse_interface_addresses(report, macs) == (
        ip_address("192.168.122.9"), ip_address("192.168.122.5"))
    assert parse_interface_addresses(report) == (
        ip_address("192.168.122.5"), ip_address("192.168.122.9"))


async def test_create_with_multi_nic(env: DriverEnv) -> None:
    provider = env.provider()
    request = make_request(multi_nic=True)
    instance = await provider.create_instance(request)
    try:
        dom = env.conn.lookupByUUIDString(instance.id)  # type: ignore[attr-defined]
        xml = dom.XMLDesc(0)
        root = ET.fromstring(xml)
        found = interfaces(root)
        assert len(found) == 2
        assert {i.find("source").get("network") for i in found} == {"default"}  # type: ignore[union-attr]
        macs = interface_macs(xml)
        assert len(set(macs)) == 2  # libvirt gave each its own MAC
        report = dom.interfaceAddresses(0, 0)
        by_mac = {v["hwaddr"].lower(): v["addrs"][0]["addr"] for v in report.values()}
        assert str(instance.ips[0]) == by_mac[macs[0]]
    finally:
        await provider.delete_instance(instance.id)
        await provider.aclose()
    plain = env.provider()
    single = await plain.create_instance(make_request())
    try:
        dom = env.conn.lookupByUUIDString(single.id)  # type: ignore[attr-defined]
        assert len(interfaces(ET.fromstring(dom.XMLDesc(0)))) == 1
    finally:
        await plain.delete_instance(single.id)
        await plain.aclose()
