"""The pod's volumes as virtio data disks: the domain XML (pure), and create/delete against
libvirt's ``test:///default`` driver, which keep the volumes."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest

from providers.base import InvalidSpec
from providers.libvirt.datadisks import DataDisk
from providers.libvirt.domain import build_domain_xml, disk_paths
from tests.providers.libvirt.conftest import DriverEnv, make_request
from tests.providers.libvirt.test_builders import config

DISKS = (DataDisk("/pool/pvc-a.img"), DataDisk("/dev/sdz", kind="block"),
         DataDisk("/pool/pvc-c.qcow2", fmt="qcow2"))


def data_disks(root: ET.Element) -> list[tuple[str, str, str, str, str, str]]:
    found = []
    for disk in root.findall("devices/disk"):
        serial = disk.findtext("serial")
        if serial is None:
            continue
        source = disk.find("source")
        target = disk.find("target")
        driver = disk.find("driver")
        assert source is not None and target is not None and driver is not None
        found.append((serial, disk.get("type", ""), source.get("file") or source.get("dev", ""),
                      target.get("dev", ""), target.get("bus", ""), driver.get("type", "")))
    return found


def test_x86_64_data_disks_follow_the_domains_own() -> None:
    xml = build_domain_xml(config(data_disks=DISKS))
    root = ET.fromstring(xml)
    assert data_disks(root) == [
        ("peerpods-lun-0", "file", "/pool/pvc-a.img", "vda", "virtio", "raw"),
        ("peerpods-lun-1", "block", "/dev/sdz", "vdb", "virtio", "raw"),
        ("peerpods-lun-2", "file", "/pool/pvc-c.qcow2", "vdc", "virtio", "qcow2"),
    ]
    tags = [child.tag for child in root.find("devices")]  # type: ignore[union-attr]
    assert tags[:5] == ["disk"] * 5  # root, config drive, then the data disks
    # Deleting the domain deletes its own volumes only.
    assert disk_paths(xml) == ["/pool/podvm-web-12345678-root.qcow2",
                               "/pool/podvm-web-12345678-cloudinit.iso"]


@pytest.mark.parametrize(("arch", "first"), [("s390x", "vdc"), ("aarch64", "vdb")])
def test_other_arches_take_the_next_free_virtio_names(arch: str, first: str) -> None:
    root = ET.fromstring(build_domain_xml(config(arch=arch, data_disks=DISKS[:1])))
    assert data_disks(root)[0][3] == first
    disk = next(d for d in root.findall("devices/disk") if d.findtext("serial"))
    assert disk.find("driver").get("iommu") == "on"  # type: ignore[union-attr]


def make_volumes(env: DriverEnv, count: int, fmt: str = "raw") -> tuple[str, ...]:
    pool = env.pool()
    paths = []
    for _ in range(count):
        name = f"pvc-{uuid.uuid4().hex[:8]}.img"
        vol = pool.createXML(  # type: ignore[attr-defined]
            f"<volume><name>{name}</name><capacity unit='bytes'>1048576</capacity>"
            f"<target><format type='{fmt}'/></target></volume>", 0)
        paths.append(vol.path())
    return tuple(paths)


async def test_create_attaches_and_delete_keeps_the_volumes(env: DriverEnv) -> None:
    raw = make_volumes(env, 1)
    qcow = make_volumes(env, 1, "qcow2")
    provider = env.provider()
    try:
        instance = await provider.create_instance(make_request(volumes=raw + qcow))
        dom = env.conn.lookupByUUIDString(instance.id)  # type: ignore[attr-defined]
        attached = data_disks(ET.fromstring(dom.XMLDesc(0)))
        assert [(a[0], a[2], a[5]) for a in attached] == [
            ("peerpods-lun-0", raw[0], "raw"), ("peerpods-lun-1", qcow[0], "qcow2")]
        # A second pod cannot take a volume in use.
        other = make_request(volumes=raw)
        with pytest.raises(InvalidSpec, match="already in use by domain"):
            await provider.create_instance(other)
        assert other.name not in env.domain_names()
        await provider.delete_instance(instance.id)
        assert instance.name not in env.domain_names()
        paths = {v.path() for v in env.pool().listAllVolumes()}  # type: ignore[attr-defined]
        assert set(raw + qcow) <= paths
    finally:
        await provider.aclose()


async def test_unknown_volume_is_refused(env: DriverEnv) -> None:
    provider = env.provider()
    volumes_before = env.volume_names()
    try:
        request = make_request(volumes=("/no/such/volume.img",))
        with pytest.raises(InvalidSpec, match="no libvirt storage volume has this path"):
            await provider.create_instance(request)
        assert request.name not in env.domain_names()
        assert env.volume_names() == volumes_before
    finally:
        await provider.aclose()
