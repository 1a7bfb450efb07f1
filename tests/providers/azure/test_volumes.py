"""Managed disks of a pod (CSI block volumes) on the loopback ARM endpoint: checked against
the size's maxDataDiskCount, their state and region, then attached as data disks with
LUN = index and deleteOption Detach; deleting the VM leaves them, unattached."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from providers.azure.provider import AzureProvider
from providers.base import InstanceSpec, InvalidSpec
from tests.providers.azure.armserver import ArmServer
from tests.providers.azure.conftest import request_for

Factory = Callable[..., AzureProvider]


async def test_data_disks_attached_then_kept(arm: ArmServer, providers: Factory) -> None:
    state = arm.state
    first, second = state.add_disk("pvc-data"), state.add_disk("pvc-logs")
    provider = providers()
    request = request_for(spec=InstanceSpec(volumes=(first, second)))
    instance = await provider.create_instance(request)

    body = state.vm_bodies[-1]
    assert body["properties"]["storageProfile"]["dataDisks"] == [
        {"lun": 0, "createOption": "Attach", "deleteOption": "Detach",
         "managedDisk": {"id": first}},
        {"lun": 1, "createOption": "Attach", "deleteOption": "Detach",
         "managedDisk": {"id": second}},
    ]
    for name in ("pvc-data", "pvc-logs"):
        disk = state.disks[name]
        assert (disk["managedBy"], disk["properties"]["diskState"]) == (instance.id, "Attached")
    await provider.delete_instance(instance.id)
    assert state.vms == {}
    for name in ("pvc-data", "pvc-logs"):
        disk = state.disks[name]
        assert "managedBy" not in disk and disk["properties"]["diskState"] == "Unattached"


async def test_disks_refused_before_anything_is_made(
    arm: ArmServer, providers: Factory
) -> None:
    state = arm.state
    provider = providers()
    busy = state.add_disk("pvc-busy")
    holder = await provider.create_instance(request_for(spec=InstanceSpec(volumes=(busy,))))
    far = state.add_disk("pvc-far", location="West Europe")
    missing = state.resource_id("Microsoft.Compute", "disks", "pvc-none")
    five = tuple(state.add_disk(f"pvc-{i}") for i in range(5))
    bodies = len(state.vm_bodies)
    cases = [
        (five, "requested 5 data disks but VM size Standard_DC2as_v5 supports at most 4"),
        ((busy,), f'disk "{busy}" is in state "Attached" (attached to {holder.id})'),
        ((far,), f'disk "{far}" is in region "West Europe" but PodVM targets region '
                 '"eastus"'),
        ((missing,), 'disk "pvc-none" does not exist in resource group "peerpods-rg"'),
        (("/dev/sdb",), "disk '/dev/sdb' is not an Azure managed disk resource id"),
    ]
    for volumes, message in cases:
        with pytest.raises(InvalidSpec) as caught:
            await provider.create_instance(request_for(spec=InstanceSpec(volumes=volumes)))
        assert message in str(caught.value)
    assert len(state.vm_bodies) == bodies and len(state.vms) == 1
    with pytest.raises(InvalidSpec, match=r"disk pre-validation failed:\n  - .*\n  - "):
        await provider.create_instance(request_for(spec=InstanceSpec(volumes=(far, missing))))
    await provider.delete_instance(holder.id)
