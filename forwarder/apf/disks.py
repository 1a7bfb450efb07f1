"""Finding a cloud volume's block device inside the pod VM, as upstream does
(``interceptor.go findDataDiskDevice`` and its helpers).

The cloud is recognised from what the VM shows: ``/dev/disk/azure`` or Azure's DMI chassis
asset tag -> azure; ``/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_*`` -> aws;
``/dev/vd[a-z]`` -> libvirt; otherwise generic. Then, per attempt:

* azure: ``/dev/disk/azure/data/by-lun/<lun>``, ``/dev/disk/azure/scsi1/lun<lun>``, then a
  ``/dev/disk/by-path/*vmbus*-lun-<lun>`` link not on SCSI host 0;
* aws: the EBS by-id link whose name holds the volume id without dashes
  (``vol-0abc`` -> ``..._vol0abc``); by index among the links only when there is no id;
* libvirt: the virtio disk whose serial (``/sys/block/vdX/serial``) is ``peerpods-lun-<lun>``,
  the serial this project's libvirt provider gives volume N; only when no virtio disk carries
  such a serial, upstream's ``/dev/vd<b+lun>`` (which assumes the root disk is ``vda``: on
  x86_64 the provider's root disk is SATA, so there volume 0 is ``vda`` and the letters
  would name the wrong disk);
* always last: SCSI HCTL matching in sysfs (hosts other than 0 first; on host 0 only
  devices that are neither mounted nor partitioned).

The whole detection is retried (``CAA_DISK_DETECT_MAX_ATTEMPTS`` times, default 15,
``CAA_DISK_DETECT_RETRY_DELAY`` apart, default 2s). ``/dev``, ``/sys`` and the mount table
are a :class:`DiskLayout`, so tests point them at a directory of symlinks to loop devices.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from forwarder.apf.cloudvolumes import CloudVolumeError

log = logging.getLogger(__name__)

AZURE_CHASSIS_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
AWS_EBS_PREFIX = "nvme-Amazon_Elastic_Block_Store_"
LIBVIRT_SERIAL_PREFIX = "peerpods-lun-"  # providers/libvirt/datadisks.py SERIAL_PREFIX
DEFAULT_DETECT_ATTEMPTS = 15
DEFAULT_DETECT_DELAY = 2.0
_SYSFS_PREFIXES = ("sd", "nvme", "vd")


class DiskNotFound(CloudVolumeError):
    """No block device for a LUN after every attempt."""


@dataclass(frozen=True, slots=True)
class DiskLayout:
    """Where the VM's device nodes, sysfs and mount table are."""

    dev: Path = Path("/dev")
    sys: Path = Path("/sys")
    mounts: Path = Path("/proc/self/mounts")

    @property
    def is_real(self) -> bool:
        return self.dev == Path("/dev")


@dataclass(frozen=True, slots=True)
class DetectPolicy:
    attempts: int = DEFAULT_DETECT_ATTEMPTS
    delay: float = DEFAULT_DETECT_DELAY  # seconds


def detect_provider(layout: DiskLayout) -> str:
    if (layout.dev / "disk/azure").exists():
        return "azure"
    try:
        tag = (layout.sys / "class/dmi/id/chassis_asset_tag").read_text().strip()
    except OSError:
        tag = ""
    if tag == AZURE_CHASSIS_ASSET_TAG:
        return "azure"
    if _ebs_links(layout):
        return "aws"
    if sorted((layout.dev).glob("vd[a-z]")):
        return "libvirt"
    return "generic"


def _ebs_links(layout: DiskLayout) -> list[Path]:
    return sorted((layout.dev / "disk/by-id").glob(f"{AWS_EBS_PREFIX}*"))


def _resolve(link: Path) -> str | None:
    """``filepath.EvalSymlinks``: the target if it exists, else None."""
    if not os.path.lexists(link):
        return None
    target = os.path.realpath(link)
    return target if os.path.exists(target) else None


def find_azure(layout: DiskLayout, lun: int) -> str | None:
    for link in (layout.dev / f"disk/azure/data/by-lun/{lun}",
                 layout.dev / f"disk/azure/scsi1/lun{lun}"):
        target = _resolve(link)
        if target is not None:
            log.info("found Azure data disk: %s -> %s", link, target)
            return target
    by_path = layout.dev / "disk/by-path"
    try:
        names = sorted(os.listdir(by_path))
    except OSError:
        return None
    for name in names:
        if "vmbus" not in name or not name.endswith(f"-lun-{lun}") or "part" in name:
            continue
        target = _resolve(by_path / name)
        if target is None:
            continue
        if _scsi_host(layout, os.path.basename(target)) == 0:
            log.info("skipping by-path %s -> %s (SCSI host 0, OS disk area)", name, target)
            continue
        log.info("found Azure data disk via by-path: %s -> %s", name, target)
        return target
    return None


def find_aws(layout: DiskLayout, lun: int, disk_id: str) -> str | None:
    candidates = [c for c in _ebs_links(layout) if "-part" not in c.name]
    if disk_id:
        wanted = disk_id.replace("-", "")
        for link in candidates:
            if wanted in link.name:
                target = _resolve(link)
                if target is not None:
                    log.info("found AWS EBS disk by volume ID: %s -> %s (diskID=%s)", link,
                             target, disk_id)
                return target
        return None
    if lun >= len(candidates):
        return None
    target = _resolve(candidates[lun])
    if target is not None:
        log.info("found AWS EBS disk by index: %s -> %s", candidates[lun], target)
    return target


def _virtio_serials(layout: DiskLayout) -> dict[str, str]:
    """The virtio disks that carry one of the libvirt provider's serials: serial -> name."""
    found = {}
    for block in sorted(layout.sys.glob("block/vd*")):
        try:
            serial = (block / "serial").read_text().strip()
        except OSError:
            continue
        if serial.startswith(LIBVIRT_SERIAL_PREFIX):
            found[serial] = block.name
    return found


def find_libvirt(layout: DiskLayout, lun: int) -> str | None:
    serials = _virtio_serials(layout)
    if serials:
        name = serials.get(f"{LIBVIRT_SERIAL_PREFIX}{lun}")
        target = None if name is None else _resolve(layout.dev / name)
        if target is not None:
            log.info("found libvirt virtio disk by serial %s%d: %s", LIBVIRT_SERIAL_PREFIX, lun,
                     target)
        return target
    if not 0 <= lun <= 24:
        return None
    device = layout.dev / f"vd{chr(ord('b') + lun)}"
    target = _resolve(device)
    if target is not None:
        log.info("found libvirt virtio disk: %s", device)
    return target


def _hctl(layout: DiskLayout, name: str) -> tuple[int, int] | None:
    """(host, lun) of a block device from its sysfs ``device`` link, if it is SCSI."""
    try:
        real = os.path.realpath(layout.sys / "block" / name / "device", strict=True)
    except OSError:
        return None
    for part in real.split("/"):
        fields = part.split(":")
        if len(fields) == 4 and fields[0].isdigit() and fields[3].isdigit():
            return int(fields[0]), int(fields[3])
    return None


def _scsi_host(layout: DiskLayout, name: str) -> int | None:
    hctl = _hctl(layout, name)
    return None if hctl is None else hctl[0]


def _is_mounted_device(layout: DiskLayout, name: str) -> bool:
    try:
        text = layout.mounts.read_text()
    except OSError:
        return False
    return any(line.split(" ", 1)[0].startswith(f"/dev/{name}") for line in text.splitlines())


def _has_partitions(layout: DiskLayout, name: str) -> bool:
    try:
        return any(entry.startswith(name) for entry in os.listdir(layout.sys / "block" / name))
    except OSError:
        return False


def find_by_sysfs_hctl(layout: DiskLayout, lun: int) -> str | None:
    try:
        names = sorted(os.listdir(layout.sys / "block"))
    except OSError:
        return None
    matches: list[tuple[int, str]] = []
    for name in names:
        if name.startswith(_SYSFS_PREFIXES):
            hctl = _hctl(layout, name)
            if hctl is not None and hctl[1] == lun:
                matches.append((hctl[0], name))
    for host, name in matches:  # pass 1: data disk controllers
        if host != 0 and not _is_mounted_device(layout, name):
            log.info("found data disk via sysfs HCTL (host>0): /dev/%s (LUN %d)", name, lun)
            return str(layout.dev / name)
    for host, name in matches:  # pass 2: raw, unmounted disks on host 0
        if host == 0 and not _is_mounted_device(layout, name) \
                and not _has_partitions(layout, name):
            log.info("found data disk via sysfs HCTL (host=0, raw): /dev/%s (LUN %d)", name, lun)
            return str(layout.dev / name)
    return None


def find_once(layout: DiskLayout, provider: str, lun: int, disk_id: str) -> str | None:
    found: str | None = None
    if provider == "azure":
        found = find_azure(layout, lun)
    elif provider == "aws":
        found = find_aws(layout, lun, disk_id)
    elif provider == "libvirt":
        found = find_libvirt(layout, lun)
    return found or find_by_sysfs_hctl(layout, lun)


async def _udev_rescan() -> None:
    """Let udev create the Azure links for disks attached after boot (best effort)."""
    for argv in (("udevadm", "trigger", "--subsystem-match=block"),
                 ("udevadm", "settle", "--timeout=5")):
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
        except OSError:
            return
        if await proc.wait() != 0:
            return


async def find_data_disk(
    layout: DiskLayout, policy: DetectPolicy, lun: int, disk_id: str, *, label: str
) -> str:
    """The block device (resolved path) for ``lun``/``disk_id``; :class:`DiskNotFound`."""
    provider = await asyncio.to_thread(detect_provider, layout)
    log.info("%s: cloud provider detected: %s (LUN %d, diskID %s)", label, provider, lun,
             disk_id)
    if provider == "azure" and layout.is_real:
        await _udev_rescan()
    for attempt in range(1, policy.attempts + 1):
        if attempt > 1:
            log.info("%s: retry %d/%d for LUN %d...", label, attempt, policy.attempts, lun)
            await asyncio.sleep(policy.delay)
        device = await asyncio.to_thread(find_once, layout, provider, lun, disk_id)
        if device is not None:
            return device
    raise DiskNotFound(
        f"no data disk found for LUN {lun} (provider={provider}) after {policy.attempts} "
        "attempts")


def require_block_device(device: str) -> None:
    """Refuse anything but a block device (upstream waits for it in sysfs instead)."""
    try:
        mode = os.stat(device).st_mode
    except OSError as exc:
        raise CloudVolumeError(f"device {device} not available: {exc.strerror or exc}") from None
    if not stat.S_ISBLK(mode):
        raise CloudVolumeError(f"device {device} not available: not a block device")
