"""The pod's managed disks (CSI block volumes) as data disks of the VM, as upstream's
``azure/provider.go`` (``validateDiskCount``, ``validateDisks``, ``getVMParameters``):

- the count must not exceed the size's ``maxDataDiskCount`` (when the size list cannot be
  read, or does not name the size, upstream only warns, and so does this);
- every disk must exist, be neither ``Attached`` nor ``Reserved``, and be in the VM's region;
- the VM body lists them as data disks: LUN = index, ``createOption: Attach``,
  ``deleteOption: Detach`` (deleting the VM detaches them and keeps them).

Beyond upstream, a disk id that is not a managed-disk resource id is refused here (upstream
skips its validation and lets the VM PUT fail).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import azure.mgmt.compute.models as cm

from providers.base import InvalidSpec, ProviderError

log = logging.getLogger(__name__)

DISK_RESOURCE_ID = re.compile(r"resourceGroups/([^/]+)/providers/Microsoft\.Compute/disks/(.+)$")
BUSY_STATES = ("Attached", "Reserved")

Call = Callable[..., Awaitable[Any]]


def data_disks(volumes: Sequence[str]) -> list[cm.DataDisk]:
    return [
        cm.DataDisk(lun=index, create_option="Attach", delete_option="Detach",
                    managed_disk=cm.ManagedDiskParameters(id=disk_id))
        for index, disk_id in enumerate(volumes)
    ]


def add_data_disks(vm: cm.VirtualMachine, volumes: Sequence[str]) -> None:
    """Put the volumes into the VM body's storage profile, LUN = index."""
    props = vm.properties
    if props is None or props.storage_profile is None:
        raise ValueError("VM body without a storage profile")
    props.storage_profile.data_disks = data_disks(volumes)


def _region(text: str) -> str:
    return text.replace(" ", "").lower()


def check_count(sizes: Sequence[Any], size: str, count: int) -> None:
    """``sizes``: the region's VM sizes."""
    for item in sizes:
        if getattr(item, "name", None) == size and item.max_data_disk_count is not None:
            most = int(item.max_data_disk_count)
            if count > most:
                raise InvalidSpec(f"requested {count} data disks but VM size {size} supports "
                                  f"at most {most}")
            log.info("Disk count validation: %d/%d data disks for VM size %s", count, most,
                     size)
            return
    log.warning("could not find max disk count for VM size %s, skipping validation", size)


async def check_disks(get_disk: Call, volumes: Sequence[str], region: str) -> None:
    """``get_disk(resource_group, name)`` returns the disk or raises :class:`ProviderError`
    (``None`` when the disk does not exist)."""
    problems: list[str] = []
    for disk_id in volumes:
        match = DISK_RESOURCE_ID.search(disk_id)
        if match is None:
            problems.append(f"disk {disk_id!r} is not an Azure managed disk resource id")
            continue
        rg, name = match.group(1), match.group(2)
        try:
            disk = await get_disk(rg, name)
        except ProviderError as exc:
            problems.append(f'disk "{disk_id}" is inaccessible: {exc}')
            continue
        if disk is None:
            problems.append(f'disk "{name}" does not exist in resource group "{rg}"')
            continue
        state = getattr(getattr(disk, "properties", None), "disk_state", None) or getattr(
            disk, "disk_state", None)
        state = getattr(state, "value", state)  # the SDK's str enum formats as its name
        if state in BUSY_STATES:
            problems.append(f'disk "{disk_id}" is in state "{state}" (attached to '
                            f'{getattr(disk, "managed_by", None) or ""}) — cannot attach to '
                            "new PodVM")
            continue
        location = str(getattr(disk, "location", "") or "")
        if _region(location) != _region(region):
            problems.append(f'disk "{disk_id}" is in region "{location}" but PodVM targets '
                            f'region "{region}"')
            continue
        if getattr(disk, "zones", None):
            log.info("Disk %r is in zone(s) %s — ensure PodVM targets a compatible zone",
                     disk_id, disk.zones)
    if problems:
        raise InvalidSpec("disk pre-validation failed:\n  - " + "\n  - ".join(problems))
