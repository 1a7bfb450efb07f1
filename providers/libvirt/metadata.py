"""What the provider records in a domain's ``<metadata>``: its tags and creation time.

The element lives in the project's own XML namespace, so a domain without it was not made by
this provider and is never listed, reused or deleted as one of ours.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from providers.base import SANDBOX_TAG
from providers.kit import matches

NAMESPACE = "urn:peerpods:libvirt:instance:1"
PREFIX = "peerpods"

ET.register_namespace(PREFIX, NAMESPACE)

_INSTANCE = f"{{{NAMESPACE}}}instance"
_CREATED = f"{{{NAMESPACE}}}created"
_TAG = f"{{{NAMESPACE}}}tag"


@dataclass(frozen=True, slots=True)
class InstanceMetadata:
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None

    @property
    def sandbox_id(self) -> str:
        return self.tags.get(SANDBOX_TAG, "")

    def matches(self, wanted: Mapping[str, str]) -> bool:
        return matches(self.tags, wanted)


def to_element(meta: InstanceMetadata) -> ET.Element:
    """The ``<peerpods:instance>`` element that goes inside the domain's ``<metadata>``."""
    root = ET.Element(_INSTANCE)
    if meta.created_at is not None:
        created = meta.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        ET.SubElement(root, _CREATED).text = created.isoformat()
    for key in sorted(meta.tags):
        ET.SubElement(root, _TAG, {"key": key}).text = meta.tags[key]
    return root


def from_domain(domain: ET.Element) -> InstanceMetadata | None:
    """Read our metadata back from a parsed ``<domain>``; ``None`` when it has none."""
    element = domain.find(f"metadata/{_INSTANCE}")
    if element is None:
        return None
    tags: dict[str, str] = {}
    for tag in element.findall(_TAG):
        key = tag.get("key")
        if key:
            tags[key] = tag.text or ""
    created_at = None
    created_text = element.findtext(_CREATED)
    if created_text:
        try:
            created_at = datetime.fromisoformat(created_text.strip())
        except ValueError:
            created_at = None
        if created_at is not None and created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=UTC)
    return InstanceMetadata(tags=tags, created_at=created_at)


def from_domain_xml(text: str) -> InstanceMetadata | None:
    return from_domain(ET.fromstring(text))
