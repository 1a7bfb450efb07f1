"""The pod's CSI block volumes as virtio disks of the domain (upstream's libvirt provider
attaches none; this is an addition).

A volume's disk id is the path of a storage volume on the libvirt host (any pool): a file
(raw or qcow2, as the volume says) or a block device. Volume N becomes the next free
``vdX`` disk with serial ``peerpods-lun-N`` (``/dev/disk/by-id/virtio-peerpods-lun-N`` in
the guest). Deleting the domain never deletes these volumes: :func:`is_data_disk` tells
them apart from the domain's own root and config-drive volumes.
"""

from __future__ import annotations

import string
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

import libvirt

from providers.base import InvalidSpec
from providers.libvirt.connection import is_missing

SERIAL_PREFIX = "peerpods-lun-"
FORMATS = ("raw", "qcow2")


@dataclass(frozen=True, slots=True)
class DataDisk:
    path: str
    kind: str = "file"  # "file" or "block"
    fmt: str = "raw"


def is_data_disk(disk: ET.Element) -> bool:
    serial = disk.findtext("serial") or ""
    return serial.startswith(SERIAL_PREFIX)


def resolve(conn: libvirt.virConnect, disk_id: str) -> DataDisk:
    """The storage volume at ``disk_id``; :class:`InvalidSpec` when there is none, or when a
    domain already uses it (blocking: run in a worker thread)."""
    try:
        vol = conn.storageVolLookupByPath(disk_id)
    except libvirt.libvirtError as exc:
        if is_missing(exc, "storage_vol"):
            raise InvalidSpec(f"volume {disk_id!r}: no libvirt storage volume has this path "
                              "on the libvirt host") from None
        raise
    root = ET.fromstring(vol.XMLDesc(0))
    kind = "block" if root.get("type") == "block" else "file"
    fmt_element = root.find("target/format")
    fmt = fmt_element.get("type", "raw") if fmt_element is not None else "raw"
    if kind == "block":
        fmt = "raw"
    if fmt not in FORMATS:
        raise InvalidSpec(f"volume {disk_id!r}: format {fmt!r} is not raw or qcow2")
    for dom in conn.listAllDomains(0):
        if disk_id in _sources(dom.XMLDesc(0)):
            raise InvalidSpec(f"volume {disk_id!r} is already in use by domain {dom.name()}")
    return DataDisk(path=vol.path(), kind=kind, fmt=fmt)


def _sources(domain_xml: str) -> set[str]:
    root = ET.fromstring(domain_xml)
    found: set[str] = set()
    for source in root.findall("devices/disk/source"):
        found.update(v for k, v in source.attrib.items() if k in ("file", "dev") and v)
    return found


def _target_names() -> list[str]:
    letters = string.ascii_lowercase
    return [f"vd{a}" for a in letters] + [f"vd{a}{b}" for a in letters for b in letters]


def append(domain: ET.Element, disks: Sequence[DataDisk], *, iommu: bool) -> None:
    """Add the disks to ``domain``'s devices, after its own, LUN = position."""
    devices = domain.find("devices")
    if devices is None:
        raise ValueError("domain XML without devices")
    used = {t.get("dev") for t in devices.findall("disk/target")}
    free = (name for name in _target_names() if name not in used)
    last_disk = max((i for i, child in enumerate(devices) if child.tag == "disk"), default=-1)
    for lun, data in enumerate(disks):
        disk = ET.Element("disk", {"type": data.kind, "device": "disk"})
        driver = {"name": "qemu", "type": data.fmt, "cache": "none"}
        if iommu:
            driver["iommu"] = "on"
        ET.SubElement(disk, "driver", driver)
        ET.SubElement(disk, "source", {"dev" if data.kind == "block" else "file": data.path})
        ET.SubElement(disk, "target", {"dev": next(free), "bus": "virtio"})
        ET.SubElement(disk, "serial").text = f"{SERIAL_PREFIX}{lun}"
        devices.insert(last_disk + 1 + lun, disk)
