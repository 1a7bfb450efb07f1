"""Mounting a cloud volume's block device, as upstream's ``formatAndMount`` and
``secureMount`` do, and undoing it.

Plain volume: try ``mount -t <fs>``; if that fails, ask ``blkid -p``: a signature means
"mount it as whatever it is" (never format), exit status 2 means the device is empty and
only then ``mkfs.<fs>`` runs; anything else (three tries) refuses to format.

Encrypted volume: the confidential data hub's ``api.SecureMountService/SecureMount`` on its
unix socket, volume type ``block-device`` with upstream's options (``sourceType`` is
``encrypted`` when the device starts with the LUKS magic, else ``empty``; the key is
``kbs:///<key_id>``; the mapper is ``caa-<volume>``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from forwarder.apf.cloudvolumes import CloudVolume, CloudVolumeError
from protocols.kata import confidential_data_hub_pb2 as cdh_pb
from protocols.ttrpc import Client, ConnectionClosed, TTRPCError

log = logging.getLogger(__name__)

CDH_SOCKET = "/run/confidential-containers/cdh.sock"
CDH_SERVICE = "api.SecureMountService"
LUKS_MAGIC = b"LUKS\xba\xbe"
BLKID_NO_SIGNATURE = 2
_BLKID_TRIES = 3
_BLKID_RETRY_DELAY = 2.0
_OUTPUT_LIMIT = 500


class MountFailed(CloudVolumeError):
    """A volume could not be mounted (or formatted, or opened)."""


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    output: str  # stdout and stderr together, stripped, cut to the last 500 characters


async def run(argv: Sequence[str]) -> Completed:
    """Run a command with no stdin (so nothing can prompt), capturing its output."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
    except OSError as exc:
        return Completed(127, f"{argv[0]}: {exc.strerror or exc}")
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return Completed(proc.returncode, out.decode(errors="replace").strip()[-_OUTPUT_LIMIT:])


async def format_and_mount(device: str, mount_point: str, fs_type: str, *, label: str) -> None:
    """Mount ``device`` at ``mount_point``, formatting it first only if it is empty."""
    first = await run(["mount", "-t", fs_type, device, mount_point])
    if first.returncode == 0:
        log.info("%s: mounted existing filesystem on %s at %s (type=%s)", label, device,
                 mount_point, fs_type)
        return
    log.info("%s: initial mount of %s failed (expected for new disks): %s", label, device,
             first.output)
    needs_format = False
    for attempt in range(1, _BLKID_TRIES + 1):
        probe = await run(["blkid", "-p", device])
        if probe.returncode == 0 and probe.output:
            auto = await run(["mount", device, mount_point])
            if auto.returncode != 0:
                raise MountFailed(f"device {device} has filesystem signature ({probe.output}) "
                                  f"but mount failed: {auto.output}")
            log.info("%s: mounted %s at %s (auto-detected type from: %s)", label, device,
                     mount_point, probe.output)
            return
        if probe.returncode == BLKID_NO_SIGNATURE:
            needs_format = True
            break
        log.warning("%s: blkid attempt %d for %s failed: exit status %d (output: %s)", label,
                    attempt, device, probe.returncode, probe.output)
        if attempt < _BLKID_TRIES:
            await asyncio.sleep(_BLKID_RETRY_DELAY)
    if not needs_format:
        raise MountFailed(f"cannot determine filesystem state of {device} after retries; "
                          "refusing to format to protect data")
    log.info("%s: no filesystem on %s, formatting as %s", label, device, fs_type)
    mkfs = await run([f"mkfs.{fs_type}", device])
    if mkfs.returncode != 0:
        raise MountFailed(f"mkfs.{fs_type} on {device} failed: {mkfs.output}: "
                          f"exit status {mkfs.returncode}")
    log.info("%s: formatted %s as %s", label, device, fs_type)
    second = await run(["mount", "-t", fs_type, device, mount_point])
    if second.returncode != 0:
        raise MountFailed(f"mount after format {device} -> {mount_point} failed: "
                          f"{second.output}: exit status {second.returncode}")
    log.info("%s: mounted %s at %s (type=%s)", label, device, mount_point, fs_type)


def is_luks(device: str) -> bool:
    """The device starts with the LUKS magic (LUKS1 and LUKS2 alike)."""
    try:
        with open(device, "rb") as handle:
            header = handle.read(len(LUKS_MAGIC))
    except OSError as exc:
        raise MountFailed(f"cannot determine LUKS state of {device} (refusing to proceed to "
                          f"avoid data loss): {exc.strerror or exc}") from None
    if len(header) < len(LUKS_MAGIC):
        raise MountFailed(f"cannot determine LUKS state of {device} (refusing to proceed to "
                          "avoid data loss): short read")
    return header == LUKS_MAGIC


@dataclass(frozen=True, slots=True)
class CdhEndpoint:
    socket: str = CDH_SOCKET
    dial_attempts: int = 10  # upstream's newCDHClient: 10 dials, 2 s apart
    dial_delay: float = 2.0
    call_timeout: float | None = None


async def _dial(cdh: CdhEndpoint, *, label: str) -> Client:
    for attempt in range(1, cdh.dial_attempts + 1):
        try:
            return await Client.connect_unix(cdh.socket)
        except OSError as exc:
            if attempt == cdh.dial_attempts:
                raise MountFailed(f"connecting to CDH at {cdh.socket}: dialing CDH socket "
                                  f"after {attempt} attempts: {exc.strerror or exc}") from None
            log.info("%s: CDH socket %s not ready (attempt %d/%d): %s", label, cdh.socket,
                     attempt, cdh.dial_attempts, exc.strerror or exc)
        await asyncio.sleep(cdh.dial_delay)
    raise MountFailed(f"connecting to CDH at {cdh.socket}: no attempt made")


def secure_mount_options(volume: CloudVolume, device: str, source_type: str) -> dict[str, str]:
    return {
        "devicePath": device,
        "sourceType": source_type,
        "targetType": "fileSystem",
        "encryptionType": volume.encrypt_type,
        "filesystemType": volume.fs_type,
        "key": volume.key_uri,
        "mapperName": volume.mapper_name,
    }


async def secure_mount(
    cdh: CdhEndpoint, volume: CloudVolume, device: str, mount_point: str, *, label: str
) -> None:
    """Have the data hub open (or create) the LUKS2 volume and mount it at ``mount_point``."""
    source_type = "encrypted" if await asyncio.to_thread(is_luks, device) else "empty"
    log.info("%s: secureMount: device=%s mountPoint=%s sourceType=%s encryptType=%s "
             "mapperName=%s", label, device, mount_point, source_type, volume.encrypt_type,
             volume.mapper_name)
    request = cdh_pb.SecureMountRequest(
        volume_type="block-device",
        options=secure_mount_options(volume, device, source_type),
        flags=[],
        mount_point=mount_point,
    )
    client = await _dial(cdh, label=label)
    try:
        await client.call(CDH_SERVICE, "SecureMount", request, cdh_pb.SecureMountResponse,
                          timeout=cdh.call_timeout)
    except TTRPCError as exc:
        raise MountFailed(f"CDH secure_mount failed for {device}: CDH SecureMount RPC "
                          f"failed: {exc.message}") from None
    except (ConnectionClosed, TimeoutError) as exc:
        raise MountFailed(f"CDH secure_mount failed for {device}: CDH SecureMount RPC "
                          f"failed: {exc or type(exc).__name__}") from None
    finally:
        await client.aclose()
    log.info("%s: secureMount: CDH mounted %s at %s", label, device, mount_point)


async def unmount(mount_point: str) -> Completed:
    return await run(["umount", mount_point])


async def close_mapper(name: str) -> Completed:
    return await run(["cryptsetup", "close", name])


def mapper_exists(name: str, dev: str = "/dev") -> bool:
    return os.path.lexists(os.path.join(dev, "mapper", name))
