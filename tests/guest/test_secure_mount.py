"""SecureMount block-device/LUKS2 with the real cryptsetup, the key fetched from the KBS."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from guest.cdh.config import CdhConfig, KbcConfig
from guest.cdh.hub import Hub
from guest.cdh.kbc import OfflineFsKbc
from guest.cdh.secure_mount import (
    BlockDeviceParameters,
    Cryptsetup,
    SecureMounter,
    SecureMountError,
    header_path,
)
from guest.cdh.service import CdhServices
from protocols.kata import confidential_data_hub_pb2 as pb
from protocols.ttrpc import Code, Server, TTRPCError
from protocols.ttrpc.testing import connect_pair

DISK_KEY = b"disk key \x00\x01 from the KBS"
CRYPTSETUP = shutil.which("cryptsetup") or "/usr/sbin/cryptsetup"
needs_cryptsetup = pytest.mark.skipif(
    not os.path.exists(CRYPTSETUP), reason="cryptsetup not installed (.ci/apt/guest.txt)"
)
# the default PBKDF (argon2id, up to 1 GiB) is what production uses; tests use a cheap one
CHEAP_PBKDF = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")


def device_mapper_works() -> bool:
    """The kernel has device-mapper (a /dev/mapper/control node alone proves nothing)."""
    try:
        return "device-mapper" in Path("/proc/misc").read_text()
    except OSError:
        return False


def make_image(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def mounter(tmp_path: Path) -> SecureMounter:
    hub = Hub(CdhConfig(KbcConfig("offline_fs_kbc")), OfflineFsKbc({"default/key/disk": DISK_KEY}))

    async def unseal(secret: bytes) -> bytes:
        raise AssertionError("not used")

    return SecureMounter(
        hub.get_resource,
        unseal,
        cryptsetup=Cryptsetup(CRYPTSETUP, CHEAP_PBKDF),
        headers_dir=tmp_path / "headers",
        sysfs=tmp_path / "sys",
    )


async def test_passphrase(image: Path, header: Path, key: bytes) -> int:
    process = await asyncio.create_subprocess_exec(
        CRYPTSETUP,
        "open",
        "--test-passphrase",
        "--header",
        str(header),
        "-d",
        "-",
        str(image),
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await process.communicate(key)
    assert process.returncode is not None
    return process.returncode


test_passphrase.__test__ = False  # type: ignore[attr-defined]


@needs_cryptsetup
async def test_empty_device_is_formatted_with_the_kbs_key(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    make_image(image, 32 * 1024 * 1024)
    target = tmp_path / "volume"
    options = {
        "devicePath": str(image),
        "sourceType": "empty",
        "encryptionType": "luks2",
        "key": "kbs:///default/key/disk",
        "targetType": "device",
        "mapperName": "pp-test",
    }
    dm_available = device_mapper_works()
    if dm_available:
        await mounter(tmp_path).secure_mount("block-device", options, [], str(target))
        assert os.readlink(target) == "/dev/mapper/pp-test"
        await Cryptsetup(CRYPTSETUP).close("pp-test")
    else:  # no device-mapper here: formatting happened, opening cannot
        with pytest.raises(SecureMountError, match="luksOpen failed"):
            await mounter(tmp_path).secure_mount("block-device", options, [], str(target))
    header = header_path(str(image), tmp_path / "headers")
    assert header.stat().st_mode & 0o777 == 0o600
    assert await test_passphrase(image, header, DISK_KEY) == 0
    assert await test_passphrase(image, header, b"another key") != 0
    # the key never reaches a command line or an error message
    with pytest.raises(FileExistsError):  # a second format would need a fresh header
        await mounter(tmp_path).secure_mount("block-device", options, [], str(target))


def test_parameters(tmp_path: Path) -> None:
    uevent = tmp_path / "sys/dev/block/252:16"
    uevent.mkdir(parents=True)
    (uevent / "uevent").write_text("MAJOR=252\nMINOR=16\nDEVNAME=vdb\nDEVTYPE=disk\n")
    params = BlockDeviceParameters.parse(
        {
            "deviceId": "252:16",
            "sourceType": "encrypted",
            "encryptionType": "luks2",
            "targetType": "fileSystem",
            "filesystemType": "xfs",
            "mkfsOpts": "-K -f",
            "dataIntegrity": "true",
        },
        tmp_path / "sys",
    )
    assert params.device_path == "/dev/vdb"
    assert (params.filesystem_type, params.mkfs_opts, params.integrity) == (
        "xfs",
        ("-K", "-f"),
        True,
    )
    assert len(params.mapper_name) == 36
    for options, message in [
        ({"sourceType": "empty", "encryptionType": "luks2", "targetType": "device"}, "no device"),
        (
            {
                "devicePath": "/d",
                "sourceType": "empty",
                "encryptionType": "zfs",
                "targetType": "device",
            },
            "luks2 only",
        ),
        (
            {
                "devicePath": "/d",
                "sourceType": "x",
                "encryptionType": "luks2",
                "targetType": "device",
            },
            "sourceType",
        ),
        (
            {
                "deviceId": "9:9",
                "sourceType": "empty",
                "encryptionType": "luks2",
                "targetType": "device",
            },
            "no block device",
        ),
    ]:
        with pytest.raises(SecureMountError, match=message):
            BlockDeviceParameters.parse(options, tmp_path / "sys")


async def test_illegal_key_scheme_and_volume_type(tmp_path: Path) -> None:
    options = {
        "devicePath": "/dev/null",
        "sourceType": "encrypted",
        "encryptionType": "luks2",
        "key": "http://example/key",
        "targetType": "device",
    }
    with pytest.raises(SecureMountError, match="illegal key scheme"):
        await mounter(tmp_path).secure_mount("block-device", options, [], str(tmp_path / "m"))
    with pytest.raises(SecureMountError, match="not supported"):
        await mounter(tmp_path).secure_mount("alibaba-cloud-oss", options, [], "/m")


async def test_secure_mount_status_over_ttrpc(tmp_path: Path) -> None:
    hub = Hub(CdhConfig(KbcConfig("offline_fs_kbc")), OfflineFsKbc({}))
    server = Server()
    CdhServices(hub).register(server)
    client = await connect_pair(server)
    try:
        with pytest.raises(TTRPCError) as raised:
            await client.call(
                "api.SecureMountService",
                "SecureMount",
                pb.SecureMountRequest(volume_type="nfs", mount_point="/m"),
                pb.SecureMountResponse,
            )
        assert (raised.value.code, raised.value.message) == (
            Code.INTERNAL,
            "[CDH] [ERROR]: Secure Mount failed",
        )
    finally:
        await client.aclose()
        await server.shutdown()
