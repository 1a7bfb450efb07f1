"""The libvirt provider against a real libvirtd running QEMU (in a network namespace).

A small Debian image (tests/providers/libvirt/build-test-image.sh) boots as the pod VM under
emulation, with the default UEFI firmware (OVMF, per-domain NVRAM), and asks the libvirt
network for a DHCP lease; the provider must report that
address, upload the config drive through a libvirt stream, and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest

from providers.base import SANDBOX_TAG, InvalidSpec, ProviderError
from providers.libvirt import Settings, cidata
from providers.libvirt.provider import LibvirtProvider
from providers.libvirt.storage import stream_download
from tests.providers.libvirt.conftest import libvirt, make_request
from tests.providers.libvirt.libvirtd import URI, Libvirtd

pytestmark = [pytest.mark.libvirt, pytest.mark.root, pytest.mark.netns]


def settings_for(daemon: Libvirtd, **changes: object) -> Settings:
    values: dict[str, object] = {
        "uri": URI,
        "pool_name": daemon.pool,
        "network_name": daemon.network,
        "vol_name": daemon.base_volume,
        "domain_type": "qemu",  # KVM may be present yet unusable; emulation always works
        "root_disk_size": 2,
        "ip_timeout": timedelta(minutes=4),
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


def volume_names(conn: object, pool: str) -> set[str]:
    return {v.name() for v in conn.storagePoolLookupByName(pool).listAllVolumes()}  # type: ignore[attr-defined]


async def test_pod_vm_boots_gets_a_lease_and_is_deleted(libvirtd: Libvirtd) -> None:
    conn = libvirt.open(URI)
    volumes_before = volume_names(conn, libvirtd.pool)
    provider = LibvirtProvider(settings_for(libvirtd), node_name="node-a")
    request = make_request(vcpus=1, memory_mib=768)
    try:
        await provider.verify_config()
        instance = await provider.create_instance(request)

        subnet = ipaddress.ip_network(f"{libvirtd.subnet_prefix}.0/24")
        assert instance.ips and all(ip in subnet for ip in instance.ips)
        dom = conn.lookupByUUIDString(instance.id)
        assert dom.name() == request.name and dom.isActive()
        root = ET.fromstring(dom.XMLDesc(0))
        assert root.get("type") == "qemu"
        mac = root.find("devices/interface/mac").get("address")  # type: ignore[union-attr]
        leases = conn.networkLookupByName(libvirtd.network).DHCPLeases()
        assert any(
            lease["mac"] == mac and ipaddress.ip_address(lease["ipaddr"]) in instance.ips
            for lease in leases
        )

        # the config drive went through a real libvirt stream: read it back the same way
        iso_vol = conn.storagePoolLookupByName(libvirtd.pool).storageVolLookupByName(
            f"{request.name}-cloudinit.iso"
        )
        image = stream_download(conn, iso_vol)
        assert cidata.volume_id(image) == "cidata"
        assert cidata.read_iso(image) == {
            "user-data": request.user_data,
            "meta-data": f"local-hostname: {request.name}".encode(),
            "vendor-data": b"",
        }

        listed = await provider.list_instances({SANDBOX_TAG: request.sandbox_id})
        assert [(i.id, i.ips) for i in listed] == [(instance.id, instance.ips)]

        # a restart mid-create finds the running domain and reuses it
        again = await LibvirtProvider(settings_for(libvirtd), node_name="node-a") \
            .create_instance(request)
        assert again.id == instance.id

        await provider.delete_instance(instance.id)
        await provider.delete_instance(instance.id)
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByUUIDString(instance.id)
        assert request.name not in {d.name() for d in conn.listAllDomains(0)}
        assert volume_names(conn, libvirtd.pool) == volumes_before
    finally:
        await provider.aclose()
        conn.close()


async def test_missing_base_volume_on_a_real_pool(libvirtd: Libvirtd) -> None:
    conn = libvirt.open(URI)
    volumes_before = volume_names(conn, libvirtd.pool)
    provider = LibvirtProvider(settings_for(libvirtd), node_name="node-a")
    try:
        name = f"podvm-none-{uuid.uuid4().hex[:8]}"
        with pytest.raises(InvalidSpec) as info:
            await provider.create_instance(make_request(name=name, image="absent.qcow2"))
        assert str(info.value) == "Error in creating volume: Can't retrieve volume absent.qcow2"
        assert volume_names(conn, libvirtd.pool) == volumes_before
        assert name not in {d.name() for d in conn.listAllDomains(0)}
    finally:
        await provider.aclose()
        conn.close()


def leftovers(conn: object, daemon: Libvirtd, name: str) -> tuple[set[str], bool]:
    pool_volumes = volume_names(conn, daemon.pool)
    ours = {v for v in pool_volumes if v.startswith(name)}
    return ours, name in {d.name() for d in conn.listAllDomains(0)}  # type: ignore[attr-defined]


async def test_no_address_in_time_releases_everything(libvirtd: Libvirtd) -> None:
    conn = libvirt.open(URI)
    provider = LibvirtProvider(
        settings_for(libvirtd, ip_timeout=timedelta(seconds=2)), node_name="node-a"
    )
    request = make_request(vcpus=1, memory_mib=512)
    try:
        with pytest.raises(ProviderError, match="IP addresses not found"):
            await provider.create_instance(request)  # the guest needs far more than 2 s
        assert leftovers(conn, libvirtd, request.name) == (set(), False)
    finally:
        await provider.aclose()
        conn.close()


async def test_cancelled_create_releases_everything(libvirtd: Libvirtd) -> None:
    conn = libvirt.open(URI)
    provider = LibvirtProvider(settings_for(libvirtd), node_name="node-a")
    request = make_request(vcpus=1, memory_mib=512)
    try:
        task = asyncio.create_task(provider.create_instance(request))
        for _ in range(200):  # until the domain is running and the provider waits for an IP
            if leftovers(conn, libvirtd, request.name)[1]:
                break
            await asyncio.sleep(0.1)
        assert leftovers(conn, libvirtd, request.name)[1]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert leftovers(conn, libvirtd, request.name) == (set(), False)
    finally:
        await provider.aclose()
        conn.close()
