"""Real block devices for the cloud volume tests: sparse files on loop devices, shown to the
forwarder as a libvirt VM's virtio disks (a ``dev`` directory of ``vdX`` symlinks), and
cleaned up (mounts, LUKS mappers, loop devices) whatever happened."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from forwarder.apf.disks import DiskLayout
from forwarder.apf.volumes import mount_points

CRYPTSETUP = shutil.which("cryptsetup") or "/usr/sbin/cryptsetup"
# cryptsetup's default PBKDF (argon2id, up to 1 GiB) is for production; tests use a cheap one
CHEAP_PBKDF = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
XFS_MIN_BYTES = 320 * 1024 * 1024  # mkfs.xfs refuses file systems under 300 MB


def tools_missing() -> list[str]:
    return [t for t in ("losetup", "blkid", "mkfs.ext4", "mkfs.xfs", "mount", "umount")
            if shutil.which(t) is None]


def device_mapper_works() -> bool:
    """The kernel has device-mapper (a /dev/mapper/control node alone proves nothing)."""
    try:
        return "device-mapper" in Path("/proc/misc").read_text()
    except OSError:
        return False


def sh(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, check=False, timeout=120)


def blkid_value(device: str, tag: str) -> str:
    result = sh("blkid", "-p", "-s", tag, "-o", "value", device)
    return result.stdout.decode().strip()


@dataclass
class Disks:
    """Loop devices as ``/dev/vd<b+lun>`` of a fake ``dev`` root; mounts go below ``base``."""

    root: Path
    loops: list[str] = field(default_factory=list)
    mappers: set[str] = field(default_factory=set)

    @property
    def layout(self) -> DiskLayout:
        return DiskLayout(self.root / "dev", self.root / "sys")

    @property
    def base(self) -> str:
        return str(self.root / "cloud-volumes")

    def add(self, lun: int, size: int = 64 * 1024 * 1024) -> str:
        """A new empty disk at ``lun``; returns its loop device."""
        image = self.root / f"disk{lun}.img"
        with open(image, "wb") as handle:
            handle.truncate(size)
        result = sh("losetup", "--find", "--show", str(image))
        assert result.returncode == 0, result.stderr
        loop = result.stdout.decode().strip()
        self.loops.append(loop)
        (self.root / "dev" / f"vd{chr(ord('b') + lun)}").symlink_to(loop)
        return loop

    def mounted_below_base(self) -> list[str]:
        return sorted(p for p in mount_points() if p.startswith(self.base + "/"))

    def open_mappers(self) -> list[str]:
        return sorted(name for name in self.mappers if os.path.lexists(f"/dev/mapper/{name}"))

    def cleanup(self) -> None:
        for point in reversed(self.mounted_below_base()):
            sh("umount", "-l", point)
        for name in self.open_mappers():
            sh(CRYPTSETUP, "close", name)
        for loop in self.loops:
            sh("losetup", "-d", loop)


@contextlib.contextmanager
def disks(root: Path) -> Iterator[Disks]:
    (root / "dev").mkdir()
    (root / "sys").mkdir()
    made = Disks(root)
    try:
        yield made
    finally:
        made.cleanup()


def luks_format(device: str, key: bytes) -> None:
    result = sh(CRYPTSETUP, "--batch-mode", "luksFormat", "--type", "luks2", *CHEAP_PBKDF,
                device, "-", stdin=key)
    assert result.returncode == 0, result.stderr


def contains(device: str, needle: bytes) -> bool:
    with open(device, "rb") as handle:
        return needle in handle.read()


def write(path: str, data: bytes) -> None:
    """Write and flush to the device, as a pod's process would before it exits."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()
