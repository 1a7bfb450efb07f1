"""Storage volume XML and sizes for the root overlay and the config drive (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

GIB = 1024**3


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


def _volume(name: str, capacity: int, fmt: str) -> ET.Element:
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="bytes").text = str(capacity)
    target = ET.SubElement(volume, "target")
    ET.SubElement(target, "format", type=fmt)
    ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = "0644"
    return volume


def overlay_xml(name: str, capacity: int, backing_path: str, backing_format: str) -> str:
    """A qcow2 volume whose backing store is the base image."""
    volume = _volume(name, capacity, "qcow2")
    backing = ET.SubElement(volume, "backingStore")
    ET.SubElement(backing, "path").text = backing_path
    ET.SubElement(backing, "format", type=backing_format)
    return ET.tostring(volume, encoding="unicode")


def raw_xml(name: str, capacity: int) -> str:
    return ET.tostring(_volume(name, capacity, "raw"), encoding="unicode")


def volume_format(volume_xml: str) -> str:
    """The ``target/format`` type of a volume, ``raw`` when the pool does not say."""
    element = ET.fromstring(volume_xml).find("target/format")
    fmt = element.get("type") if element is not None else None
    return fmt or "raw"
