"""The pod's EBS volumes (CSI block volumes), as upstream's ``aws/provider.go``
(``validateVolumes``, ``attachEBSVolumes``, ``waitForVolumeAttached``, ``ebsDeviceName``):

- before RunInstances every id must look like ``vol-<8+ hex>`` and be ``available``;
- after it, wait until the instance runs (120 s), attach volume N as ``ebs_device_name(N)``
  (``/dev/xvdb``, ``/dev/xvdc``, ...) and poll until each is ``attached`` (60 s, every 3 s);
- AttachVolume leaves DeleteOnTermination false, so terminating the instance detaches the
  volumes and keeps them with their data (nothing to do at delete).

Beyond upstream, an attach finds volumes already attached to this same instance (a create
resumed after a restart) and only waits for those.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from providers.aws.params import GONE_STATES, state_of
from providers.base import InstanceNotFound, InvalidSpec, ProviderError

log = logging.getLogger(__name__)

RUNNING_WAIT = 120.0  # upstream's maxWaitTime for the instance-running waiter
ATTACH_TIMEOUT = 60.0  # ebsAttachTimeout
ATTACH_POLL = 3.0  # ebsAttachPollRate
EBS_VOLUME_ID = re.compile(r"vol-[0-9a-f]{8,}")

Call = Callable[..., Awaitable[dict[str, Any]]]


def ebs_device_name(index: int) -> str:
    """``/dev/xvdb`` .. ``/dev/xvdz`` for 0-24, then ``/dev/xvdba`` .. for 25 on."""
    if index < 25:
        return f"/dev/xvd{chr(ord('b') + index)}"
    first = chr(ord("b") + (index - 25) // 26)
    second = chr(ord("a") + (index - 25) % 26)
    return f"/dev/xvd{first}{second}"


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EbsVolumes:
    """Volume calls of one provider. ``call`` is the provider's rate-limited EC2 call
    (``call(action, mutating=..., **params)``)."""

    def __init__(self, call: Call, *, poll_interval: float = ATTACH_POLL) -> None:
        self._call = call
        self._poll = poll_interval

    async def validate(self, volume_ids: Sequence[str]) -> None:
        """Raise :class:`InvalidSpec` unless every volume exists and is ``available``."""
        for volume_id in volume_ids:
            if not EBS_VOLUME_ID.fullmatch(volume_id):
                raise InvalidSpec(f"invalid EBS volume ID format: {_go_quote(volume_id)}")
        result = await self._call("describe_volumes", mutating=False,
                                  VolumeIds=list(volume_ids))
        problems = []
        for volume in result.get("Volumes", ()):
            state = str(volume.get("State", ""))
            if state != "available":
                attached = "".join(f" (attached to {a['InstanceId']})"
                                   for a in volume.get("Attachments", ())[-1:]
                                   if a.get("InstanceId"))
                problems.append(f"volume {volume['VolumeId']} is in state "
                                f"{_go_quote(state)}{attached}")
        if problems:
            raise InvalidSpec("EBS volume pre-validation failed: " + "; ".join(problems))

    async def attach(self, instance_id: str, volume_ids: Sequence[str]) -> None:
        """Wait for the instance to run, attach every volume, wait until all are attached."""
        await self._wait_running(instance_id)
        try:
            async with asyncio.TaskGroup() as group:
                for index, volume_id in enumerate(volume_ids):
                    group.create_task(self._attach_one(instance_id, volume_id, index))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None

    async def _attach_one(self, instance_id: str, volume_id: str, index: int) -> None:
        device = ebs_device_name(index)
        if not await self._attached_to(volume_id, instance_id):
            log.info("instance=%s: Attaching EBS volume %s as %s (index %d)", instance_id,
                     volume_id, device, index)
            result = await self._call("attach_volume", mutating=True, Device=device,
                                      InstanceId=instance_id, VolumeId=volume_id)
            log.info("instance=%s: AttachVolume request accepted for %s (state: %s)",
                     instance_id, volume_id, result.get("State", ""))
        try:
            async with asyncio.timeout(ATTACH_TIMEOUT):
                while True:
                    if await self._attached_state(volume_id):
                        break
                    await asyncio.sleep(self._poll)
        except TimeoutError:
            raise ProviderError(f"waiting for EBS volume {volume_id} to attach: volume "
                                f"{volume_id} did not reach attached state within "
                                f"{ATTACH_TIMEOUT:.0f}s") from None
        log.info("instance=%s: EBS volume %s attached successfully as %s", instance_id,
                 volume_id, device)

    async def _describe(self, volume_id: str) -> dict[str, Any] | None:
        result = await self._call("describe_volumes", mutating=False, VolumeIds=[volume_id])
        volumes = result.get("Volumes") or []
        return volumes[0] if volumes else None

    async def _attached_to(self, volume_id: str, instance_id: str) -> bool:
        volume = await self._describe(volume_id)
        return volume is not None and any(
            a.get("InstanceId") == instance_id for a in volume.get("Attachments", ()))

    async def _attached_state(self, volume_id: str) -> bool:
        volume = await self._describe(volume_id)
        attachments = (volume or {}).get("Attachments") or []
        return bool(attachments) and attachments[0].get("State") == "attached"

    async def _wait_running(self, instance_id: str) -> None:
        try:
            async with asyncio.timeout(RUNNING_WAIT):
                while True:
                    try:
                        result = await self._call("describe_instances", mutating=False,
                                                  InstanceIds=[instance_id])
                    except InstanceNotFound:
                        result = {}  # not visible yet (eventual consistency)
                    found = [i for r in result.get("Reservations", ())
                             for i in r.get("Instances", ())]
                    if found and state_of(found[0]) == "running":
                        return
                    if found and state_of(found[0]) in GONE_STATES:
                        raise ProviderError(f"instance {instance_id} is "
                                            f"{state_of(found[0])} while starting")
                    await asyncio.sleep(self._poll)
        except TimeoutError:
            raise ProviderError(f"waiting for instance {instance_id} to be running: not "
                                f"running after {RUNNING_WAIT:.0f}s") from None
