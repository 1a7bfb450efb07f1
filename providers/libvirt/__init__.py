"""libvirt provider: each pod VM is a libvirt domain (local or remote libvirtd with QEMU).

Importing this package does not import libvirt-python; :func:`make_provider` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from providers.libvirt.config import Settings

if TYPE_CHECKING:
    from providers.libvirt.provider import LibvirtProvider

__all__ = ["Settings", "make_provider"]


def make_provider(settings: Settings, *, node_name: str) -> LibvirtProvider:
    from providers.libvirt.provider import LibvirtProvider

    return LibvirtProvider(settings, node_name=node_name)
