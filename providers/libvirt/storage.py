"""Blocking storage-pool operations: the root overlay, the config drive upload, deletion.

Functions here run in worker threads and raise ``libvirtError`` (or a provider error when the
message is part of the contract); the provider translates the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import libvirt

from providers.base import InvalidSpec
from providers.libvirt import volume
from providers.libvirt.connection import is_missing

log = logging.getLogger(__name__)

UPLOAD_CHUNK = 256 * 1024
REFRESH_ATTEMPTS = 5
REFRESH_PAUSE = 1.0


def refresh_pool(pool: libvirt.virStoragePool) -> None:
    """Refresh so the pool sees volumes added behind its back; it fails while a volume of the
    pool is being uploaded, so a few attempts are made before giving up quietly."""
    for attempt in range(REFRESH_ATTEMPTS):
        try:
            pool.refresh(0)
            return
        except libvirt.libvirtError as exc:
            if attempt == REFRESH_ATTEMPTS - 1:
                log.warning("pool=%s: refresh failed, going on: %s", pool.name(), exc)
                return
            time.sleep(REFRESH_PAUSE)


def find_volume(
    conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str
) -> libvirt.virStorageVol | None:
    """The volume ``name`` in ``pool``, else the volume whose key is ``name``; ``None``."""
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if not is_missing(exc, "storage_vol"):
            raise
    try:
        return conn.storageVolLookupByKey(name)
    except libvirt.libvirtError as exc:
        if not is_missing(exc, "storage_vol"):
            raise
    return None


def qemu_owner(conn: libvirt.virConnect) -> volume.Owner | None:
    """The user and group QEMU runs as on the host of ``conn``, when its capabilities say."""
    return volume.qemu_owner(conn.getCapabilities())


def create_overlay(
    conn: libvirt.virConnect,
    pool: libvirt.virStoragePool,
    name: str,
    base_name: str,
    root_disk_gib: int,
) -> str:
    """Create the private qcow2 root volume ``name`` over ``base_name``; return its path."""
    base = find_volume(conn, pool, base_name)
    if base is None:
        raise InvalidSpec(f"Error in creating volume: Can't retrieve volume {base_name}")
    _, base_capacity, _ = base.info()
    xml = volume.overlay_xml(
        name,
        volume.root_capacity(root_disk_gib, base_capacity),
        base.path(),
        volume.volume_format(base.XMLDesc(0)),
        qemu_owner(conn),
    )
    return str(pool.createXML(xml, 0).path())


def stream_upload(conn: libvirt.virConnect, vol: libvirt.virStorageVol, data: bytes) -> None:
    """Write ``data`` into ``vol`` through a libvirt stream (works over remote URIs)."""
    stream = conn.newStream(0)
    try:
        vol.upload(stream, 0, len(data), 0)
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            sent = stream.send(bytes(view[offset : offset + UPLOAD_CHUNK]))
            if sent < 0:
                raise libvirt.libvirtError("stream send failed")
            offset += sent
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise


def stream_download(conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> bytes:
    """Read a whole volume back through a stream (for checks and tools)."""
    _, capacity, _ = vol.info()
    stream = conn.newStream(0)
    chunks: list[bytes] = []
    try:
        vol.download(stream, 0, capacity, 0)
        while True:
            chunk = stream.recv(UPLOAD_CHUNK)
            if not isinstance(chunk, bytes) or not chunk:
                break
            chunks.append(chunk)
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise
    return b"".join(chunks)


def create_raw(pool: libvirt.virStoragePool, name: str, size: int) -> libvirt.virStorageVol:
    """Create the private raw volume ``name`` (the config drive)."""
    return pool.createXML(volume.raw_xml(name, size, qemu_owner(pool.connect())), 0)


def delete_volume(vol: libvirt.virStorageVol) -> bool:
    """Delete ``vol``; ``False`` when it was already gone."""
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        if is_missing(exc, "storage_vol"):
            return False
        raise
    return True


def delete_by_name(pool: libvirt.virStoragePool, name: str) -> bool:
    return _delete_found(lambda: pool.storageVolLookupByName(name))


def delete_by_path(conn: libvirt.virConnect, path: str) -> bool:
    return _delete_found(lambda: conn.storageVolLookupByPath(path))


def _delete_found(lookup: Callable[[], libvirt.virStorageVol]) -> bool:
    """Delete the volume ``lookup`` finds; False when there is none."""
    try:
        vol = lookup()
    except libvirt.libvirtError as exc:
        if is_missing(exc, "storage_vol"):
            return False
        raise
    return delete_volume(vol)
