"""The cloud_volumes annotation, disk detection per cloud and the detection settings."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from forwarder.apf.blockmount import secure_mount_options
from forwarder.apf.cloudvolumes import CloudVolume, CloudVolumeSpecError, parse_cloud_volumes
from forwarder.apf.daemon import cloud_volume_mounts
from forwarder.apf.disks import (
    AZURE_CHASSIS_ASSET_TAG,
    DetectPolicy,
    DiskLayout,
    DiskNotFound,
    detect_provider,
    find_data_disk,
    find_once,
)
from forwarder.apf.options import parse_options

# what upstream's proxy (json.Marshal of map[string]CloudVolumeAnnotation) writes
UPSTREAM_TWO = (
    '{"vol-0":{"mount_point":"/data","fs_type":"ext4","lun":"0","disk_id":"vol-0abc"},'
    '"vol-1":{"mount_point":"/logs","fs_type":"xfs","lun":"1","disk_id":"vol-1def",'
    '"fs_group":"2000","encrypt_type":"luks2","key_id":"default/key/disk"}}'
)


def test_upstream_annotation_is_parsed_in_name_order() -> None:
    volumes = parse_cloud_volumes(UPSTREAM_TWO)
    assert volumes == (
        CloudVolume("vol-0", "/data", "ext4", 0, "vol-0abc"),
        CloudVolume("vol-1", "/logs", "xfs", 1, "vol-1def", 2000, "luks2", "default/key/disk"),
    )
    assert volumes[1].key_uri == "kbs:///default/key/disk"
    assert volumes[1].mapper_name == "caa-vol-1"
    assert secure_mount_options(volumes[1], "/dev/sdc", "empty") == {
        "devicePath": "/dev/sdc", "sourceType": "empty", "targetType": "fileSystem",
        "encryptionType": "luks2", "filesystemType": "xfs", "key": "kbs:///default/key/disk",
        "mapperName": "caa-vol-1",
    }


def test_defaults_and_lenient_fields() -> None:
    (volume,) = parse_cloud_volumes(
        '{"vol-3":{"mount_point":"/d","lun":"3","fs_group":"staff","encrypt_type":"LUKS",'
        '"key_id":"a/b/c"}}')
    assert (volume.fs_type, volume.fs_group, volume.encrypt_type) == ("ext4", None, "luks2")
    (other,) = parse_cloud_volumes('{"data":{"mount_point":"/d","lun":"7"}}')
    assert other.lun == 7  # names other than vol-<N> carry any LUN, as upstream accepts


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "corrupt cloud_volumes annotation (pod would start without volumes): "),
    ("[]", "corrupt cloud_volumes annotation (pod would start without volumes): not a JSON"),
    ('{"vol-0":{"mount_point":"/d","lun":0}}',
     "corrupt cloud_volumes annotation (pod would start without volumes): vol-0.lun must be a "
     "JSON string, not 0"),
    ('{"vol-0":{"lun":"0"}}', "cloud volume vol-0 missing required mount_point or lun field"),
    ('{"..":{"mount_point":"/d","lun":"0"}}', 'cloud volume ".." has unsafe name'),
    ('{"a/b":{"mount_point":"/d","lun":"0"}}', 'cloud volume "a/b" has unsafe name'),
    ('{"vol-0":{"mount_point":"/d","lun":"0","fs_type":"btrfs"}}',
     'cloud volume vol-0 requests unsupported filesystem type "btrfs" (allowed: ext4, ext3, '
     'xfs)'),
    ('{"vol-0":{"mount_point":"/d","lun":"x"}}', 'cloud volume vol-0 has invalid lun "x"'),
    ('{"vol-0":{"mount_point":"/d","lun":"-1"}}', 'cloud volume vol-0 has invalid lun "-1"'),
    ('{"vol-1":{"mount_point":"/d","lun":"2"}}',
     "cloud volume vol-1 has lun 2, but its name says LUN 1 (LUN mismatch)"),
    ('{"a":{"mount_point":"/d","lun":"2"},"b":{"mount_point":"/e","lun":"2"}}',
     "cloud volumes a and b both claim LUN 2 (LUN mismatch)"),
    ('{"vol-0":{"mount_point":"/d","lun":"0","encrypt_type":"luks2"}}',
     'cloud volume vol-0: encrypt_type "luks2" requires a kbs-key-id but none was provided'),
    ('{"vol-0":{"mount_point":"/d","lun":"0","encrypt_type":"bitlocker","key_id":"a/b/c"}}',
     'cloud volume vol-0: unsupported encrypt_type "bitlocker" (allowed: luks, luks2)'),
])
def test_bad_annotations(text: str, message: str) -> None:
    with pytest.raises(CloudVolumeSpecError) as info:
        parse_cloud_volumes(text)
    assert str(info.value).startswith(message)


def link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


@pytest.fixture
def disks(tmp_path: Path) -> list[Path]:
    out = []
    for name in ("disk0", "disk1"):
        out.append(tmp_path / "real" / name)
        out[-1].parent.mkdir(exist_ok=True)
        out[-1].write_bytes(b"")
    return out


def layout(tmp_path: Path) -> DiskLayout:
    (tmp_path / "dev").mkdir(exist_ok=True)
    (tmp_path / "sys").mkdir(exist_ok=True)
    return DiskLayout(tmp_path / "dev", tmp_path / "sys", tmp_path / "mounts")


def test_azure_by_lun(tmp_path: Path, disks: list[Path]) -> None:
    lay = layout(tmp_path)
    link(lay.dev / "disk/azure/data/by-lun/1", disks[1])
    link(lay.dev / "disk/azure/scsi1/lun0", disks[0])
    assert detect_provider(lay) == "azure"
    assert find_once(lay, "azure", 1, "") == str(disks[1])
    assert find_once(lay, "azure", 0, "") == str(disks[0])
    assert find_once(lay, "azure", 2, "") is None


def test_azure_by_chassis_tag_and_vmbus_path(tmp_path: Path, disks: list[Path]) -> None:
    lay = layout(tmp_path)
    tag = lay.sys / "class/dmi/id/chassis_asset_tag"
    tag.parent.mkdir(parents=True)
    tag.write_text(AZURE_CHASSIS_ASSET_TAG + "\n")
    assert detect_provider(lay) == "azure"
    link(lay.dev / "disk/by-path/acpi-VMBUS:01-vmbus-f8b3-lun-0-part1", disks[1])
    link(lay.dev / "disk/by-path/acpi-VMBUS:01-vmbus-f8b3-lun-0", disks[0])
    assert find_once(lay, "azure", 0, "") == str(disks[0])


def test_aws_by_volume_id_not_by_order(tmp_path: Path, disks: list[Path]) -> None:
    lay = layout(tmp_path)
    by_id = lay.dev / "disk/by-id"
    link(by_id / "nvme-Amazon_Elastic_Block_Store_vol0aaa", disks[0])
    link(by_id / "nvme-Amazon_Elastic_Block_Store_vol0bbb", disks[1])
    link(by_id / "nvme-Amazon_Elastic_Block_Store_vol0bbb-part1", disks[0])
    assert detect_provider(lay) == "aws"
    assert find_once(lay, "aws", 0, "vol-0bbb") == str(disks[1])
    assert find_once(lay, "aws", 1, "vol-0aaa") == str(disks[0])
    assert find_once(lay, "aws", 0, "vol-0ccc") is None
    assert find_once(lay, "aws", 1, "") == str(disks[1])  # by index only without an id


def test_libvirt_by_virtio_letter(tmp_path: Path, disks: list[Path]) -> None:
    lay = layout(tmp_path)
    link(lay.dev / "vdb", disks[0])
    link(lay.dev / "vdc", disks[1])
    assert detect_provider(lay) == "libvirt"
    assert find_once(lay, "libvirt", 1, "") == str(disks[1])
    assert find_once(lay, "libvirt", 2, "") is None
    assert find_once(lay, "libvirt", 25, "") is None


def test_libvirt_by_the_providers_serial(tmp_path: Path, disks: list[Path]) -> None:
    """The libvirt provider's x86_64 domains boot from SATA: volume 0 is vda, not vdb."""
    lay = layout(tmp_path)
    for name, serial, disk in (("vda", "peerpods-lun-0", disks[0]),
                               ("vdb", "peerpods-lun-1", disks[1])):
        link(lay.dev / name, disk)
        (lay.sys / "block" / name).mkdir(parents=True)
        (lay.sys / "block" / name / "serial").write_text(serial + "\n")
    assert detect_provider(lay) == "libvirt"
    assert find_once(lay, "libvirt", 0, "") == str(disks[0])
    assert find_once(lay, "libvirt", 1, "") == str(disks[1])
    # with serials present, a LUN without one is not guessed from the letters
    assert find_once(lay, "libvirt", 2, "") is None
    link(lay.dev / "vdd", disks[0])
    assert find_once(lay, "libvirt", 2, "") is None


def test_sysfs_hctl_prefers_data_hosts_and_skips_mounted(tmp_path: Path) -> None:
    lay = layout(tmp_path)
    for name, hctl in (("sda", "0:0:0:1"), ("sdb", "1:0:0:1"), ("sdc", "2:0:0:1")):
        device = tmp_path / "devices" / hctl
        device.mkdir(parents=True)
        (lay.sys / "block" / name).mkdir(parents=True)
        (lay.sys / "block" / name / "device").symlink_to(device)
    lay.mounts.write_text("/dev/sdb /mnt ext4 rw 0 0\n")
    assert detect_provider(lay) == "generic"
    assert find_once(lay, "generic", 1, "") == str(lay.dev / "sdc")
    assert find_once(lay, "generic", 0, "") is None
    lay.mounts.write_text("/dev/sdb /mnt ext4 rw 0 0\n/dev/sdc /m ext4 rw 0 0\n")
    assert find_once(lay, "generic", 1, "") == str(lay.dev / "sda")  # raw disk on host 0
    (lay.sys / "block/sda/sda1").mkdir()
    assert find_once(lay, "generic", 1, "") is None  # partitioned: the OS disk


async def test_detection_retries_then_gives_up(tmp_path: Path, disks: list[Path],
                                               caplog: pytest.LogCaptureFixture) -> None:
    lay = layout(tmp_path)
    link(lay.dev / "vdb", disks[0])
    caplog.set_level(logging.INFO, "forwarder.apf.disks")
    with pytest.raises(DiskNotFound) as info:
        await find_data_disk(lay, DetectPolicy(3, 0.01), 1, "", label="t")
    assert str(info.value) == "no data disk found for LUN 1 (provider=libvirt) after 3 attempts"
    assert sum("retry" in r.message for r in caplog.records) == 2


async def test_detection_finds_a_disk_that_appears_late(tmp_path: Path,
                                                        disks: list[Path]) -> None:
    lay = layout(tmp_path)
    link(lay.dev / "vdb", disks[0])
    target = lay.dev / "vdc"
    os.symlink(tmp_path / "real/late", target)  # dangling until the disk shows up
    found = find_data_disk(lay, DetectPolicy(200, 0.01), 1, "", label="t")
    (tmp_path / "real/late").write_bytes(b"")
    assert await found == str(tmp_path / "real/late")


def test_detection_settings_from_the_environment(caplog: pytest.LogCaptureFixture) -> None:
    options = parse_options([], {"CAA_DISK_DETECT_MAX_ATTEMPTS": "4",
                                 "CAA_DISK_DETECT_RETRY_DELAY": "250ms"})[0]
    assert (options.disk_detect_attempts, options.disk_detect_delay) == (4, 0.25)
    assert cloud_volume_mounts(options).detect == DetectPolicy(4, 0.25)
    defaults = parse_options([])[0]
    assert (defaults.disk_detect_attempts, defaults.disk_detect_delay) == (15, 2.0)
    for attempts, delay in (("0", "-1s"), ("many", "2"), ("", "")):
        options = parse_options([], {"CAA_DISK_DETECT_MAX_ATTEMPTS": attempts,
                                     "CAA_DISK_DETECT_RETRY_DELAY": delay})[0]
        assert (options.disk_detect_attempts, options.disk_detect_delay) == (15, 2.0)
    assert "ignored, as upstream ignores it" in caplog.text


def test_upstream_json_keys_round_trip() -> None:
    """Our reading of every key matches what the adaptor side emits (upstream's tags)."""
    raw = json.loads(UPSTREAM_TWO)
    volumes = parse_cloud_volumes(UPSTREAM_TWO)
    for volume in volumes:
        entry = raw[volume.name]
        assert (volume.mount_point, volume.fs_type, str(volume.lun), volume.disk_id) == (
            entry["mount_point"], entry["fs_type"], entry["lun"], entry["disk_id"])
