"""The libvirt provider against libvirt's built-in test driver (no daemon).

The test driver has domains, networks, pools, volumes and interface addresses, but no
volume upload: the config drive upload goes through a recording stand-in here and through
a real libvirt stream in test_libvirtd.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from ipaddress import ip_address

import pytest

from providers.base import (
    NODE_TAG,
    POD_NAME_TAG,
    POD_NAMESPACE_TAG,
    SANDBOX_TAG,
    ConfigError,
    InvalidSpec,
    ProviderError,
)
from providers.libvirt import cidata, metadata
from providers.libvirt.volume import GIB
from tests.providers.libvirt.conftest import BASE_CAPACITY, DriverEnv, libvirt, make_request

NS = {"pp": metadata.NAMESPACE}


def domain_xml(env: DriverEnv, name: str) -> ET.Element:
    return ET.fromstring(env.conn.lookupByName(name).XMLDesc(0))  # type: ignore[attr-defined]


async def test_create_defines_starts_and_reports_addresses(env: DriverEnv) -> None:
    provider = env.provider(cpuset="0-1")
    request = make_request()
    instance = await provider.create_instance(request)
    try:
        assert str(uuid.UUID(instance.id)) == instance.id
        assert instance.name == request.name
        assert instance.ips and all(ip.version == 4 for ip in instance.ips)
        assert instance.state == "running"
        assert instance.tags[SANDBOX_TAG] == request.sandbox_id

        dom = env.conn.lookupByUUIDString(instance.id)  # type: ignore[attr-defined]
        assert dom.name() == request.name and dom.isActive()
        root = ET.fromstring(dom.XMLDesc(0))
        assert root.get("type") == "qemu"  # the test driver offers no KVM: emulation
        assert int(root.findtext("memory") or 0) == 2048 * 1024  # KiB
        assert root.findtext("vcpu") == "2"
        assert root.find("vcpu").get("cpuset") == "0-1"  # type: ignore[union-attr]
        assert root.find("features/acpi") is not None
        loader = root.find("os/loader")
        assert loader is not None and loader.text == env.settings.firmware
        assert loader.get("type") == "pflash" and loader.get("readonly") == "yes"
        disks = root.findall("devices/disk")
        sources = [d.find("source").get("file") for d in disks]  # type: ignore[union-attr]
        pool = env.pool()
        root_vol = pool.storageVolLookupByName(f"{request.name}-root.qcow2")  # type: ignore[attr-defined]
        iso_vol = pool.storageVolLookupByName(f"{request.name}-cloudinit.iso")  # type: ignore[attr-defined]
        assert sources == [root_vol.path(), iso_vol.path()]
        assert [d.get("device") for d in disks] == ["disk", "cdrom"]
        assert disks[1].find("target").get("dev") == "sdb"  # type: ignore[union-attr]
        assert root.find("devices/interface/source").get("network") == "default"  # type: ignore[union-attr]

        meta = metadata.from_domain(root)
        assert meta is not None
        assert meta.tags[NODE_TAG] == "node-a"
        assert meta.tags[SANDBOX_TAG] == request.sandbox_id
        assert meta.tags[POD_NAME_TAG] == "web"
        assert meta.tags[POD_NAMESPACE_TAG] == "default"
        assert meta.created_at == instance.created_at
    finally:
        await provider.delete_instance(instance.id)
        await provider.aclose()


async def test_root_volume_is_an_overlay_of_the_base(env: DriverEnv) -> None:
    provider = env.provider(root_disk_size=1)  # smaller than the 3 GiB base: base wins
    request = make_request()
    instance = await provider.create_instance(request)
    try:
        pool = env.pool()
        base = pool.storageVolLookupByName(env.base_volume)  # type: ignore[attr-defined]
        vol = pool.storageVolLookupByName(f"{request.name}-root.qcow2")  # type: ignore[attr-defined]
        xml = ET.fromstring(vol.XMLDesc(0))
        assert xml.find("target/format").get("type") == "qcow2"  # type: ignore[union-attr]
        assert xml.findtext("backingStore/path") == base.path()
        assert xml.find("backingStore/format").get("type") == "qcow2"  # type: ignore[union-attr]
        assert vol.info()[1] == BASE_CAPACITY
    finally:
        await provider.delete_instance(instance.id)
    provider = env.provider(root_disk_size=10)
    instance = await provider.create_instance(make_request())
    try:
        vol = env.conn.storageVolLookupByPath(  # type: ignore[attr-defined]
            domain_xml(env, instance.name).findall("devices/disk/source")[0].get("file")
        )
        assert vol.info()[1] == 10 * GIB
    finally:
        await provider.delete_instance(instance.id)
        await provider.aclose()


async def test_config_drive_contents(env: DriverEnv) -> None:
    provider = env.provider()
    request = make_request()
    instance = await provider.create_instance(request)
    try:
        iso_vol = env.pool().storageVolLookupByName(f"{request.name}-cloudinit.iso")  # type: ignore[attr-defined]
        image = env.uploads.data[iso_vol.path()]
        assert iso_vol.info()[1] == len(image)
        assert cidata.volume_id(image) == "cidata"
        assert cidata.read_iso(image) == {
            "user-data": request.user_data,
            "meta-data": f"local-hostname: {request.name}".encode(),
            "vendor-data": b"",
        }
    finally:
        await provider.delete_instance(instance.id)
        await provider.aclose()


async def test_spec_overrides_size_and_image(
    env: DriverEnv, caplog: pytest.LogCaptureFixture
) -> None:
    other = f"other-{uuid.uuid4().hex[:8]}.qcow2"
    env.pool().createXML(  # type: ignore[attr-defined]
        f"<volume><name>{other}</name><capacity unit='bytes'>{GIB}</capacity>"
        "<target><format type='raw'/></target></volume>", 0
    )
    provider = env.provider()
    request = make_request(vcpus=1, memory_mib=512, image=other)
    caplog.set_level(logging.INFO, logger="providers.libvirt")
    instance = await provider.create_instance(request)
    try:
        assert f"Choosing {other} as libvirt volume for the PodVM image" in caplog.messages
        root = domain_xml(env, request.name)
        assert root.findtext("vcpu") == "1"
        assert int(root.findtext("memory") or 0) == 512 * 1024
        vol = env.pool().storageVolLookupByName(f"{request.name}-root.qcow2")  # type: ignore[attr-defined]
        backing = ET.fromstring(vol.XMLDesc(0)).find("backingStore")
        assert backing is not None and backing.findtext("path", "").endswith(other)
        assert backing.find("format").get("type") == "raw"  # type: ignore[union-attr]
    finally:
        await provider.delete_instance(instance.id)
        await provider.aclose()


async def test_missing_base_volume_is_invalid_spec_and_leaves_nothing(env: DriverEnv) -> None:
    provider = env.provider()
    before = (env.domain_names(), env.volume_names())
    with pytest.raises(InvalidSpec) as info:
        await provider.create_instance(make_request(image="no-such.qcow2"))
    assert str(info.value) == "Error in creating volume: Can't retrieve volume no-such.qcow2"
    assert (env.domain_names(), env.volume_names()) == before
    await provider.aclose()


async def test_delete_twice_leaves_nothing(env: DriverEnv) -> None:
    provider = env.provider()
    before = (env.domain_names(), env.volume_names())
    instance = await provider.create_instance(make_request())
    assert env.volume_names() - before[1]
    await provider.delete_instance(instance.id)
    await provider.delete_instance(instance.id)
    await provider.delete_instance(str(uuid.uuid4()))
    await provider.delete_instance("not-a-uuid")
    assert (env.domain_names(), env.volume_names()) == before
    with pytest.raises(libvirt.libvirtError):
        env.conn.lookupByUUIDString(instance.id)  # type: ignore[attr-defined]
    await provider.aclose()


async def test_list_by_tags(env: DriverEnv) -> None:
    provider = env.provider()
    first = await provider.create_instance(make_request())
    second_request = replace(make_request(), tags={"peerpods-node": "node-b"})
    second = await provider.create_instance(second_request)
    try:
        on_a = await provider.list_instances({NODE_TAG: "node-a"})
        assert [i.id for i in on_a] == [first.id]
        assert on_a[0].ips and on_a[0].state == "running"
        assert on_a[0].created_at == first.created_at
        by_sandbox = await provider.list_instances({SANDBOX_TAG: second_request.sandbox_id})
        assert [i.id for i in by_sandbox] == [second.id]
        everything = {i.id for i in await provider.list_instances({})}
        assert everything == {first.id, second.id}  # the driver's own "test" domain is not ours
        assert "test" in env.domain_names()
    finally:
        await provider.delete_instance(first.id)
        await provider.delete_instance(second.id)
        await provider.aclose()


async def test_leftover_domain_of_same_sandbox_is_reused(env: DriverEnv) -> None:
    provider = env.provider()
    request = make_request()
    first = await provider.create_instance(request)
    again = await env.provider().create_instance(request)  # e.g. after an adaptor restart
    assert again.id == first.id and again.ips == first.ips
    await provider.delete_instance(first.id)
    await provider.aclose()


async def test_leftover_domain_of_other_sandbox_is_replaced(env: DriverEnv) -> None:
    provider = env.provider()
    request = make_request()
    first = await provider.create_instance(request)
    replacement = replace(request, sandbox_id=uuid.uuid4().hex)
    second = await provider.create_instance(replacement)
    try:
        assert second.id != first.id
        with pytest.raises(libvirt.libvirtError):
            env.conn.lookupByUUIDString(first.id)  # type: ignore[attr-defined]
        meta = metadata.from_domain(domain_xml(env, request.name))
        assert meta is not None and meta.sandbox_id == replacement.sandbox_id
    finally:
        await provider.delete_instance(second.id)
        await provider.aclose()


async def test_stopped_leftover_domain_is_replaced(env: DriverEnv) -> None:
    provider = env.provider()
    request = make_request()
    first = await provider.create_instance(request)
    env.conn.lookupByUUIDString(first.id).destroy()  # type: ignore[attr-defined]
    second = await provider.create_instance(request)
    assert second.id != first.id and second.ips
    await provider.delete_instance(second.id)
    await provider.aclose()


async def test_foreign_domain_with_the_name_is_left_alone(env: DriverEnv) -> None:
    provider = env.provider()
    with pytest.raises(InvalidSpec, match="not created by peerpods"):
        await provider.create_instance(make_request(name="test"))
    assert env.conn.lookupByName("test").isActive()  # type: ignore[attr-defined]
    await provider.aclose()


async def test_failed_upload_releases_everything(env: DriverEnv) -> None:
    provider = env.provider()
    before = (env.domain_names(), env.volume_names())
    env.uploads.fail_with = libvirt.libvirtError("upload broke")
    with pytest.raises(ProviderError, match="config drive"):
        await provider.create_instance(make_request())
    assert (env.domain_names(), env.volume_names()) == before
    await provider.aclose()


async def test_cancelled_create_releases_everything(env: DriverEnv) -> None:
    provider = env.provider()
    before = (env.domain_names(), env.volume_names())
    entered, release = threading.Event(), threading.Event()
    recorded = env.uploads

    def slow_upload(conn: object, vol: object, image: bytes) -> None:
        entered.set()
        release.wait(10)
        recorded(conn, vol, image)

    provider._upload = slow_upload
    task = asyncio.create_task(provider.create_instance(make_request()))
    await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    # The adaptor never cancels a create (Provider.create_instance); when it happens anyway,
    # the provider releases what it reaches without waiting for the upload in flight.
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (env.domain_names(), env.volume_names()) == before
    release.set()
    await provider.aclose()


async def test_reconnects_after_the_connection_drops(env: DriverEnv) -> None:
    opened: list[object] = []

    def opener(uri: str) -> object:
        conn = libvirt.open(uri)
        opened.append(conn)
        return conn

    provider = env.provider()
    provider._conn._opener = opener  # type: ignore[assignment]
    assert await provider.list_instances({NODE_TAG: "nobody"}) == []
    opened[0].close()  # type: ignore[attr-defined]
    assert await provider.list_instances({NODE_TAG: "nobody"}) == []
    assert len(opened) == 2
    await provider.aclose()


async def test_instance_types_is_none(env: DriverEnv) -> None:
    provider = env.provider()
    assert await provider.instance_types() is None
    await provider.aclose()


async def test_verify_config_accepts_a_good_setup(env: DriverEnv) -> None:
    provider = env.provider()
    await provider.verify_config()
    await provider.aclose()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"uri": "test:///nonexistent/file.xml"}, "cannot connect to libvirt"),
        ({"pool_name": "no-pool"}, "storage pool 'no-pool' not found"),
        ({"network_name": "no-net"}, "network 'no-net' not found"),
        ({"vol_name": "no-vol.qcow2"}, "volume 'no-vol.qcow2' not found"),
        ({"cpu": 0}, "LIBVIRT_CPU must be greater than zero"),
        ({"memory": 0}, "LIBVIRT_MEMORY must be greater than zero"),
        ({"cpuset": "0-"}, "invalid CPUSet format: 0-"),
        ({"domain_type": "xen"}, "LIBVIRT_DOMAIN_TYPE"),
    ],
)
async def test_verify_config_names_the_missing_piece(
    env: DriverEnv, changes: dict[str, object], message: str
) -> None:
    provider = env.provider(**changes)
    with pytest.raises(ConfigError, match=message):
        await provider.verify_config()
    await provider.aclose()


async def test_unknown_launch_security_is_refused(env: DriverEnv) -> None:
    provider = env.provider(disable_cvm=False, launch_security="tdx")
    with pytest.raises(InvalidSpec, match=r"\[tdx\] is not a known launch security setting"):
        await provider.create_instance(make_request())
    provider = env.provider(disable_cvm=False, launch_security="s390-pv")
    with pytest.raises(InvalidSpec, match="not supported for this domain: S390PV"):
        await provider.create_instance(make_request())
    await provider.aclose()


def test_addresses_are_ipv4_first_without_link_local() -> None:
    from providers.libvirt.addresses import parse_interface_addresses

    report = {
        "vnet0": {"hwaddr": "52:54:00:00:00:01", "addrs": [
            {"addr": "fe80::1", "prefix": 64, "type": 1},
            {"addr": "2001:db8::5", "prefix": 64, "type": 1},
            {"addr": "192.168.122.7", "prefix": 24, "type": 0},
        ]},
        "lo": {"hwaddr": "00:00:00:00:00:00", "addrs": [{"addr": "127.0.0.1", "prefix": 8}]},
    }
    assert parse_interface_addresses(report) == (
        ip_address("192.168.122.7"), ip_address("2001:db8::5"),
    )
    assert parse_interface_addresses({}) == ()
    assert parse_interface_addresses(None) == ()


class _Reporting:
    """The address-reporting edge of a libvirt domain: one answer (or error) per source."""

    def __init__(self, answers: dict[int, object]) -> None:
        self.answers = answers
        self.asked: list[int] = []

    def name(self) -> str:
        return "podvm-x"

    def XMLDesc(self, flags: int = 0) -> str:
        return "<domain><devices/></domain>"

    def interfaceAddresses(self, source: int, flags: int = 0) -> object:
        self.asked.append(source)
        answer = self.answers.get(source, {})
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_addresses_fall_back_from_leases_to_agent_and_arp() -> None:
    from providers.libvirt import domains

    lease = libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE
    agent = libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT
    arp = libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP
    one = {"vnet0": {"hwaddr": "52:54:00:00:00:01", "addrs": [{"addr": "10.0.0.9"}]}}

    dom = _Reporting({lease: one})
    assert domains.addresses(dom) == (ip_address("10.0.0.9"),)  # type: ignore[arg-type]
    assert dom.asked == [lease]

    dom = _Reporting({lease: {}, agent: libvirt.libvirtError("no agent"), arp: one})
    assert domains.addresses(dom) == (ip_address("10.0.0.9"),)  # type: ignore[arg-type]
    assert dom.asked == [lease, agent, arp]

    dom = _Reporting({})
    assert domains.addresses(dom) == ()  # type: ignore[arg-type]
