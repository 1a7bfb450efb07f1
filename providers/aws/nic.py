"""The pod VM's second ENI, for ``EXTERNAL_NETWORK_VIA_PODVM`` (``InstanceSpec.multi_nic``).

As upstream (cloud-providers/aws/provider.go, ``createAddonNICforInstance`` and
``createElasticIPforInstance``), after RunInstances:

1. ``CreateNetworkInterface`` in the pod VMs' subnet (``AWS_SUBNET_ID``) with their security
   groups (``AWS_SG_IDS``), tagged ``Name=nic-<instance id>`` (and, here, the instance's own
   tags, so a leftover can be traced to its sandbox);
2. wait for the instance to run, ``AttachNetworkInterface`` at device index 1 (on failure the
   ENI is deleted), ``ModifyNetworkInterfaceAttribute`` DeleteOnTermination=true: the ENI
   then goes with the instance;
3. with ``USE_PUBLIC_IP``: ``AllocateAddress`` (VPC, ``Name=eip-<instance id>``) and
   ``AssociateAddress`` with the new ENI (released again if that fails). Deleting the
   instance disassociates and releases its Elastic IPs (upstream's
   ``deleteElasticIPforInstance``; see :func:`release_elastic_ips`).

The pod VM's forwarder then moves that interface into the pod netns
(``forwarder.podnetwork.external``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from providers.aws.params import GONE_STATES, Placement, state_of
from providers.base import InstanceNotFound, ProviderError

log = logging.getLogger(__name__)

RUNNING_WAIT = 120.0  # seconds, as upstream's instance-running waiter (maxWaitTime)
ADDON_DEVICE_INDEX = 1


class Call(Protocol):
    def __call__(self, action: str, *, mutating: bool, **kwargs: Any) -> Awaitable[dict[str, Any]]:
        ...


Describe = Callable[..., Awaitable[list[dict[str, Any]]]]


def has_addon_nic(instance: Mapping[str, Any]) -> bool:
    """Whether the instance already carries a NIC at device index 1 (a create retried)."""
    return any(
        (nic.get("Attachment") or {}).get("DeviceIndex") == ADDON_DEVICE_INDEX
        for nic in instance.get("NetworkInterfaces") or ()
    )


def _tags(resource: str, name: str, tags: Mapping[str, str]) -> list[dict[str, Any]]:
    merged = {**tags, "Name": name}
    return [{"ResourceType": resource,
             "Tags": [{"Key": key, "Value": value} for key, value in merged.items()]}]


async def wait_running(describe: Describe, instance_id: str, poll: float) -> None:
    """Until the instance runs (upstream's waiter before attaching anything)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RUNNING_WAIT
    while True:
        try:
            found = await describe(InstanceIds=[instance_id])
        except InstanceNotFound:
            found = []  # not visible yet (eventual consistency)
        state = state_of(found[0]) if found else ""
        if state == "running":
            return
        if state in GONE_STATES:
            raise ProviderError(f"instance {instance_id} is {state} while starting")
        if loop.time() + poll > deadline:
            raise ProviderError(f"instance {instance_id} not running after {RUNNING_WAIT:.0f}s")
        await asyncio.sleep(poll)


async def add_addon_nic(
    call: Call, describe: Describe, instance_id: str, placement: Placement,
    tags: Mapping[str, str], *, public_ip: bool, poll: float,
) -> str:
    """Create, attach and (with ``public_ip``) give an Elastic IP to the second ENI; return
    its id. Raises :class:`ProviderError`; an ENI that never got attached is deleted."""
    params: dict[str, Any] = {
        "TagSpecifications": _tags("network-interface", f"nic-{instance_id}", tags),
    }
    if placement.subnet_id:
        params["SubnetId"] = placement.subnet_id
    if placement.security_group_ids:
        params["Groups"] = list(placement.security_group_ids)
    created = await call("create_network_interface", mutating=True, **params)
    nic_id = str(created["NetworkInterface"]["NetworkInterfaceId"])
    try:
        await wait_running(describe, instance_id, poll)
        attached = await call("attach_network_interface", mutating=True, InstanceId=instance_id,
                              NetworkInterfaceId=nic_id, DeviceIndex=ADDON_DEVICE_INDEX)
    except BaseException:
        await asyncio.shield(_delete_nic_quietly(call, nic_id))
        raise
    attachment = attached.get("AttachmentId")
    if not attachment:
        raise ProviderError(f"network interface {nic_id}: AttachmentId is nil")
    await call("modify_network_interface_attribute", mutating=True, NetworkInterfaceId=nic_id,
               Attachment={"AttachmentId": attachment, "DeleteOnTermination": True})
    log.info("instance=%s: created a network interface %s and attached it", instance_id, nic_id)
    if public_ip:
        await _add_elastic_ip(call, instance_id, nic_id, tags)
    return nic_id


async def _add_elastic_ip(
    call: Call, instance_id: str, nic_id: str, tags: Mapping[str, str]
) -> None:
    allocated = await call("allocate_address", mutating=True, Domain="vpc",
                           TagSpecifications=_tags("elastic-ip", f"eip-{instance_id}", tags))
    allocation = str(allocated["AllocationId"])
    try:
        await call("associate_address", mutating=True, AllocationId=allocation,
                   AllowReassociation=True, NetworkInterfaceId=nic_id)
    except BaseException:
        await asyncio.shield(_release_quietly(call, allocation))
        raise
    log.info("instance=%s: associated the Elastic IP address %s with %s", instance_id,
             allocated.get("PublicIp", "?"), nic_id)


async def release_elastic_ips(call: Call, instance_id: str) -> None:
    """Disassociate and release the Elastic IPs of ``instance_id`` (none: nothing to do).

    Found as upstream does, by the ``instance-id`` filter, and also by their
    ``Name=eip-<instance id>`` tag: that finds one whose association failed, and one that
    an endpoint reports under the ENI only.
    """
    found: dict[str, Mapping[str, Any]] = {}
    for filters in ([{"Name": "instance-id", "Values": [instance_id]}],
                    [{"Name": "tag:Name", "Values": [f"eip-{instance_id}"]}]):
        result = await call("describe_addresses", mutating=False, Filters=filters)
        for address in result.get("Addresses", ()):
            found[str(address["AllocationId"])] = address
    for allocation, address in found.items():
        if address.get("AssociationId"):
            await call("disassociate_address", mutating=True,
                       AssociationId=address["AssociationId"])
        await call("release_address", mutating=True, AllocationId=allocation)
        log.info("instance=%s: released the Elastic IP address %s", instance_id,
                 address.get("PublicIp", "?"))


async def _delete_nic_quietly(call: Call, nic_id: str) -> None:
    try:
        await call("delete_network_interface", mutating=True, NetworkInterfaceId=nic_id)
    except ProviderError as exc:
        log.warning("network interface %s: could not delete it: %s", nic_id, exc)


async def _release_quietly(call: Call, allocation: str) -> None:
    try:
        await call("release_address", mutating=True, AllocationId=allocation)
    except ProviderError as exc:
        log.warning("Elastic IP %s: could not release it: %s", allocation, exc)
