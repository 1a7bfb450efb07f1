"""The cloud volumes of the sandbox: mounted at ``CreateContainer``, released at
``DestroySandbox`` (upstream ``interceptor.go CreateContainer`` / ``unmountCloudVolumes``).

For each volume of the annotation, in sorted-name order: find its disk
(:mod:`forwarder.apf.disks`), mount it at ``/run/cloud-volumes/<vol>`` (plain, or through
the data hub when encrypted: :mod:`forwarder.apf.blockmount`), apply ``fs_group`` (group
owner and mode 2775 on the mount point) and rewrite the container's OCI mount whose
destination is the volume's ``mount_point`` into a bind mount from there.

Beyond upstream: a volume already mounted for an earlier container of the sandbox is reused
rather than mounted again, and a call that fails leaves nothing behind: the volumes it
mounted are unmounted and their LUKS mappers closed before the error is returned (upstream
keeps them until ``DestroySandbox``). Release unmounts in reverse order and closes each
mapper with ``cryptsetup close`` once its mount is gone, as upstream does.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from forwarder.apf import blockmount
from forwarder.apf.blockmount import CdhEndpoint
from forwarder.apf.cloudvolumes import (
    CLOUD_VOLUMES_KEY,
    CloudVolume,
    CloudVolumeError,
    parse_cloud_volumes,
)
from forwarder.apf.disks import (
    DetectPolicy,
    DiskLayout,
    DiskNotFound,
    find_data_disk,
    require_block_device,
)
from forwarder.apf.volumes import mount_points
from protocols.kata import oci_pb2

log = logging.getLogger(__name__)

CLOUD_VOLUME_MOUNT_BASE = "/run/cloud-volumes"
FS_GROUP_MODE = 0o2775


@dataclass(frozen=True, slots=True)
class MountedVolume:
    volume: CloudVolume
    path: str  # where the volume is mounted in the VM
    device: str


class CloudVolumeMounts:
    """The sandbox's mounted cloud volumes (one pod per VM, so one instance per forwarder)."""

    def __init__(
        self,
        *,
        base: str = CLOUD_VOLUME_MOUNT_BASE,
        layout: DiskLayout | None = None,
        detect: DetectPolicy | None = None,
        cdh: CdhEndpoint | None = None,
        mapper_dev: str = "/dev",
    ) -> None:
        self._base = base
        self._layout = layout or DiskLayout()
        self._detect = detect or DetectPolicy()
        self._cdh = cdh or CdhEndpoint()
        self._mapper_dev = mapper_dev
        self._mounted: list[MountedVolume] = []
        self._lock = asyncio.Lock()

    @property
    def detect(self) -> DetectPolicy:
        return self._detect

    @property
    def mounted(self) -> tuple[MountedVolume, ...]:
        return tuple(self._mounted)

    async def prepare(self, spec: oci_pb2.Spec, *, label: str) -> None:
        """Mount the volumes the spec's annotation names and point its mounts at them.
        Raises :class:`CloudVolumeError`; then nothing this call mounted is left mounted."""
        text = spec.Annotations.get(CLOUD_VOLUMES_KEY, "")
        if not text:
            return
        volumes = parse_cloud_volumes(text)
        async with self._lock:
            fresh: list[MountedVolume] = []
            try:
                for volume in volumes:
                    mounted = self._already_mounted(volume)
                    if mounted is None:
                        mounted = await self._mount(volume, fresh, label=label)
                    else:
                        log.info("%s: cloud volume %s is already mounted at %s", label,
                                 volume.name, mounted.path)
                    _rewrite_mount(spec, mounted, label=label)
            except BaseException:
                await asyncio.shield(self._undo(fresh, label=label))
                raise
            self._mounted.extend(fresh)

    async def release(self, *, label: str) -> None:
        """Unmount every volume (reverse order) and close the mappers."""
        async with self._lock:
            mounted, self._mounted = self._mounted, []
            await self._undo(mounted, label=label)

    def _already_mounted(self, volume: CloudVolume) -> MountedVolume | None:
        for mounted in self._mounted:
            if mounted.volume.name != volume.name:
                continue
            if mounted.volume != volume:
                raise CloudVolumeError(
                    f"cloud volume {volume.name} is already mounted for this sandbox with "
                    "different parameters")
            return mounted
        return None

    async def _mount(
        self, volume: CloudVolume, fresh: list[MountedVolume], *, label: str
    ) -> MountedVolume:
        name = volume.name
        try:
            device = await find_data_disk(self._layout, self._detect, volume.lun,
                                          volume.disk_id, label=label)
        except DiskNotFound as exc:
            raise DiskNotFound(f"cloud volume {name}: {exc}") from None
        log.info("%s: cloud volume %s: LUN %d -> device %s", label, name, volume.lun, device)
        path = os.path.join(self._base, name)
        try:
            require_block_device(device)
            await asyncio.to_thread(os.makedirs, path, 0o755, True)
        except (CloudVolumeError, OSError) as exc:
            raise CloudVolumeError(f"cloud volume {name} device {device} not available: "
                                   f"{exc}") from None
        mounted = MountedVolume(volume, path, device)
        fresh.append(mounted)  # from here on, a failure undoes whatever is there
        if await asyncio.to_thread(_is_mount_point, path):
            log.info("%s: mount point %s is already mounted, treating as success", label, path)
        elif volume.encrypted:
            try:
                await blockmount.secure_mount(self._cdh, volume, device, path, label=label)
            except CloudVolumeError as exc:
                raise CloudVolumeError(
                    f"failed to secure-mount cloud volume {name} at {path}: {exc}") from None
        else:
            try:
                await blockmount.format_and_mount(device, path, volume.fs_type, label=label)
            except CloudVolumeError as exc:
                raise CloudVolumeError(
                    f"failed to mount cloud volume {name} at {path}: {exc}") from None
        if volume.fs_group is not None:
            await asyncio.to_thread(_apply_fs_group, path, volume.fs_group, label)
        return mounted

    async def _undo(self, mounted: list[MountedVolume], *, label: str) -> None:
        for item in reversed(mounted):
            if await asyncio.to_thread(_is_mount_point, item.path):
                result = await blockmount.unmount(item.path)
                if result.returncode != 0:
                    log.warning("%s: failed to unmount cloud volume %s: %s", label, item.path,
                                result.output)
                    continue
                log.info("%s: unmounted cloud volume %s", label, item.path)
            mapper = item.volume.mapper_name
            if not item.volume.encrypted or not blockmount.mapper_exists(mapper,
                                                                         self._mapper_dev):
                continue
            result = await blockmount.close_mapper(mapper)
            if result.returncode != 0:
                log.warning("%s: cryptsetup close %s failed: exit status %d (%s)", label,
                            mapper, result.returncode, result.output)
            else:
                log.info("%s: closed LUKS mapping %s", label, mapper)


def _is_mount_point(path: str) -> bool:
    return os.path.realpath(path) in mount_points()


def _apply_fs_group(path: str, gid: int, label: str) -> None:
    log.info("%s: applying fsGroup %d to %s", label, gid, path)
    try:
        os.chown(path, -1, gid)
    except OSError as exc:
        log.warning("%s: failed to chown %s to gid %d: %s", label, path, gid, exc)
    try:
        os.chmod(path, FS_GROUP_MODE)
    except OSError as exc:
        log.warning("%s: failed to chmod %s: %s", label, path, exc)


def _rewrite_mount(spec: oci_pb2.Spec, mounted: MountedVolume, *, label: str) -> None:
    volume = mounted.volume
    for mount in spec.Mounts:
        if mount.destination == volume.mount_point:
            mount.source = mounted.path
            mount.type = "bind"
            log.info("%s: cloud volume %s: rewrote mount source to %s", label, volume.name,
                     mounted.path)
            return
    log.warning("%s: cloud volume %s mount_point %r not found in container mounts", label,
                volume.name, volume.mount_point)
