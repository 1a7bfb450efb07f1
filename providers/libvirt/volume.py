"""Storage volume XML and sizes for the root overlay and the config drive (pure).

Both volumes are private to the VM: the config drive carries its TLS key, ``auth.json`` and
initdata, the overlay its root file system. They are created mode 0600, owned by the user
QEMU runs as when the connection tells it: the DAC base label of libvirt's host capabilities
(``+uid:+gid``, from ``user``/``group`` in the daemon's ``qemu.conf``; the qemu driver always
reports it). Where the capabilities name no such label (other drivers) libvirt creates them
as its own user, and a DAC driver with ``dynamic_ownership`` (on by default) hands them to
QEMU's user while the domain runs. Whether ``dynamic_ownership`` is on cannot be read over
the connection; the explicit owner makes it irrelevant where the label is known.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

GIB = 1024**3
PRIVATE_MODE = "0600"


@dataclass(frozen=True, slots=True)
class Owner:
    """A numeric owner for volume files (``<permissions><owner>`` and ``<group>``)."""

    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class VolumeNames:
    root: str
    cidata: str

    @classmethod
    def for_instance(cls, name: str) -> VolumeNames:
        return cls(root=f"{name}-root.qcow2", cidata=f"{name}-cloudinit.iso")


def root_capacity(root_disk_gib: int, backing_capacity: int) -> int:
    """Bytes for the root overlay: the requested size, never below the base image."""
    return max(root_disk_gib * GIB, backing_capacity)


def _label_id(text: str) -> int | None:
    digits = text.removeprefix("+")
    return int(digits) if digits.isascii() and digits.isdigit() else None


def qemu_owner(capabilities_xml: str) -> Owner | None:
    """QEMU's user and group from the DAC base labels of host capabilities; ``None`` when
    the host names no DAC model, no numeric label, or labels that disagree."""
    labels: set[str] = set()
    for secmodel in ET.fromstring(capabilities_xml).iterfind("host/secmodel"):
        if (secmodel.findtext("model") or "").strip() != "dac":
            continue
        labels.update((label.text or "").strip() for label in secmodel.iterfind("baselabel"))
    if len(labels) != 1:
        return None
    user, _, group = labels.pop().partition(":")
    uid, gid = _label_id(user), _label_id(group)
    if uid is None or gid is None:
        return None
    return Owner(uid=uid, gid=gid)


def _volume(name: str, capacity: int, fmt: str, owner: Owner | None) -> ET.Element:
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="bytes").text = str(capacity)
    target = ET.SubElement(volume, "target")
    ET.SubElement(target, "format", type=fmt)
    permissions = ET.SubElement(target, "permissions")
    ET.SubElement(permissions, "mode").text = PRIVATE_MODE
    if owner is not None:
        ET.SubElement(permissions, "owner").text = str(owner.uid)
        ET.SubElement(permissions, "group").text = str(owner.gid)
    return volume


def overlay_xml(
    name: str, capacity: int, backing_path: str, backing_format: str, owner: Owner | None = None
) -> str:
    """A private qcow2 volume whose backing store is the base image."""
    volume = _volume(name, capacity, "qcow2", owner)
    backing = ET.SubElement(volume, "backingStore")
    ET.SubElement(backing, "path").text = backing_path
    ET.SubElement(backing, "format", type=backing_format)
    return ET.tostring(volume, encoding="unicode")


def raw_xml(name: str, capacity: int, owner: Owner | None = None) -> str:
    """A private raw volume (the config drive)."""
    return ET.tostring(_volume(name, capacity, "raw", owner), encoding="unicode")


def volume_format(volume_xml: str) -> str:
    """The ``target/format`` type of a volume, ``raw`` when the pool does not say."""
    element = ET.fromstring(volume_xml).find("target/format")
    fmt = element.get("type") if element is not None else None
    return fmt or "raw"
