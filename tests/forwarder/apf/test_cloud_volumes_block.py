"""Cloud volumes on real block devices: loop devices shown as a libvirt VM's virtio disks,
the forwarder's interceptor over ttrpc in front of a fake kata-agent, ext4 and xfs, and
encrypted volumes through our data hub with the key from the loopback KBS."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols.ttrpc import Code, TTRPCError
from tests.forwarder.apf.blockdev import (
    XFS_MIN_BYTES,
    Disks,
    blkid_value,
    create,
    destroy,
    disks,
    luks_format,
    mounted_from,
    pod_vm,
    read,
    request,
    sent_mounts,
    sh,
    tools_missing,
    volume,
    write,
)
from tests.forwarder.apf.helpers import FakeAgent

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(tools_missing()), reason=f"missing {tools_missing()}"),
]

@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Disks]:
    root = tmp_path / "vm"
    root.mkdir()
    with disks(root) as made:
        yield made


async def test_empty_disks_get_ext4_and_xfs_and_bind_mounts(vm: Disks, agent: FakeAgent) -> None:
    data, logs = vm.add(0), vm.add(1, XFS_MIN_BYTES)
    volumes = {"vol-0": volume(0, "/data"),
               "vol-1": volume(1, "/logs", fs_type="xfs", fs_group="2000")}
    async with pod_vm(vm, agent) as client:
        await create(client, request(volumes, "/data", "/logs", "/cache"))
        mounts = sent_mounts(agent)
        assert mounts["/data"] == (f"{vm.base}/vol-0", "bind")
        assert mounts["/logs"] == (f"{vm.base}/vol-1", "bind")
        assert mounts["/cache"] == ("/run/kata-containers/shared/containers/csi/cache", "bind")
        assert (blkid_value(data, "TYPE"), blkid_value(logs, "TYPE")) == ("ext4", "xfs")
        assert mounted_from(f"{vm.base}/vol-0") == (data, "ext4")
        assert mounted_from(f"{vm.base}/vol-1") == (logs, "xfs")
        info = os.stat(f"{vm.base}/vol-1")
        assert (info.st_gid, info.st_mode & 0o7777) == (2000, 0o2775)
        write(f"{vm.base}/vol-0/written", b"by the pod")

        # a second container of the pod naming the same volume reuses the mount
        await create(client, request({"vol-0": volume(0, "/data")}, "/data"))
        assert sent_mounts(agent)["/data"] == (f"{vm.base}/vol-0", "bind")
        assert vm.mounted_below_base() == [f"{vm.base}/vol-0", f"{vm.base}/vol-1"]

        await destroy(client)
        assert vm.mounted_below_base() == []
        assert len(agent.calls("DestroySandbox")) == 1


async def test_existing_filesystem_keeps_its_data_across_two_pods(
    vm: Disks, agent: FakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "forwarder.apf.blockmount")
    device = vm.add(0)
    volumes = {"vol-0": volume(0, "/data")}
    async with pod_vm(vm, agent) as client:
        await create(client, request(volumes, "/data"))
        write(f"{vm.base}/vol-0/orders.db", b"order 1\n")
        await destroy(client)
    first_uuid = blkid_value(device, "UUID")
    assert "no filesystem on" in caplog.text
    caplog.clear()

    async with pod_vm(vm, agent) as client:
        await create(client, request(volumes, "/data"))
        assert read(f"{vm.base}/vol-0/orders.db") == b"order 1\n"
        await destroy(client)
    assert blkid_value(device, "UUID") == first_uuid
    assert "mounted existing filesystem" in caplog.text
    assert "formatting" not in caplog.text


async def test_blkid_decides_and_a_used_device_is_never_formatted(
    vm: Disks, agent: FakeAgent
) -> None:
    xfs = vm.add(0, XFS_MIN_BYTES)
    assert sh("mkfs.xfs", "-q", xfs).returncode == 0
    xfs_uuid = blkid_value(xfs, "UUID")
    luks = vm.add(1)
    luks_format(luks, b"someone else's key")
    luks_uuid = blkid_value(luks, "UUID")
    async with pod_vm(vm, agent) as client:
        # the pod asks for ext4; the disk holds xfs: mounted as what blkid finds
        await create(client, request({"vol-0": volume(0, "/data")}, "/data"))
        assert mounted_from(f"{vm.base}/vol-0") == (xfs, "xfs")
        await destroy(client)

        # a LUKS device asked for as a plain volume: refused, not formatted
        with pytest.raises(TTRPCError) as info:
            await create(client, request({"vol-0": volume(0, "/data"),
                                          "vol-1": volume(1, "/logs")}, "/data", "/logs"))
        assert info.value.code == Code.INTERNAL
        assert info.value.message.startswith(
            f"failed to mount cloud volume vol-1 at {vm.base}/vol-1: device {luks} has "
            "filesystem signature (")
        assert "but mount failed" in info.value.message
        assert vm.mounted_below_base() == []  # vol-0 was mounted by the call, and undone
    assert (blkid_value(xfs, "UUID"), blkid_value(luks, "UUID")) == (xfs_uuid, luks_uuid)
    assert blkid_value(luks, "TYPE") == "crypto_LUKS"
    assert len(agent.calls("CreateContainer")) == 1


@pytest.mark.parametrize(("annotation", "code", "message"), [
    ({"vol-0": volume(0, "/data"), "vol-1": volume(1, "/logs")}, Code.NOT_FOUND,
     "cloud volume vol-1: no data disk found for LUN 1 (provider=libvirt) after 2 attempts"),
    ({"vol-0": volume(0, "/data", fs_type="zfs")}, Code.INVALID_ARGUMENT,
     'cloud volume vol-0 requests unsupported filesystem type "zfs" (allowed: ext4, ext3, '
     'xfs)'),
    ({"vol-0": volume(1, "/data")}, Code.INVALID_ARGUMENT,
     "cloud volume vol-0 has lun 1, but its name says LUN 0 (LUN mismatch)"),
    ('{"vol-0": {"mount_point"', Code.INVALID_ARGUMENT,
     "corrupt cloud_volumes annotation (pod would start without volumes): Expecting"),
])
async def test_bad_input_leaves_nothing_behind_and_the_next_call_works(
    vm: Disks, agent: FakeAgent, annotation: dict[str, Any] | str, code: Code, message: str
) -> None:
    vm.add(0)
    async with pod_vm(vm, agent) as client:
        with pytest.raises(TTRPCError) as info:
            await create(client, request(annotation, "/data", "/logs"))
        assert (info.value.code, info.value.message[:len(message)]) == (code, message)
        assert vm.mounted_below_base() == []
        assert agent.calls("CreateContainer") == []

        await create(client, request({"vol-0": volume(0, "/data")}, "/data"))
        assert sent_mounts(agent)["/data"] == (f"{vm.base}/vol-0", "bind")
        await destroy(client)
        assert vm.mounted_below_base() == []


@pytest.mark.parametrize(("links", "disk_ids"), [
    # AWS: EBS by-id links, listed in another order than the LUNs; matched by volume id
    (("disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0ffff",
      "disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0aaaa"), ("vol-0ffff", "vol-0aaaa")),
    # Azure: data disks by LUN
    (("disk/azure/data/by-lun/0", "disk/azure/data/by-lun/1"), ("", "")),
], ids=["aws", "azure"])
async def test_each_volume_lands_on_its_own_disk(
    vm: Disks, agent: FakeAgent, links: tuple[str, str], disk_ids: tuple[str, str]
) -> None:
    first, second = vm.add(0, link=links[0]), vm.add(1, link=links[1])
    volumes = {"vol-0": volume(0, "/a", disk_id=disk_ids[0]),
               "vol-1": volume(1, "/b", disk_id=disk_ids[1])}
    async with pod_vm(vm, agent) as client:
        await create(client, request(volumes, "/a", "/b"))
        assert mounted_from(f"{vm.base}/vol-0") == (first, "ext4")
        assert mounted_from(f"{vm.base}/vol-1") == (second, "ext4")
        await destroy(client)
        assert vm.mounted_below_base() == []
