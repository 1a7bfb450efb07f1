"""The calls the forwarder decodes and changes on their way to kata-agent.

Everything else in ``grpc.AgentService`` and ``grpc.Health`` is relayed frame by frame,
undecoded (:mod:`protocols.ttrpc.relay`). Each handler below gets the request payload and
returns the payload to send on; the agent's answer comes back unchanged. The changes are
upstream's:

* ``CreateSandbox``: ``dns`` is cleared, so the agent leaves the VM's ``/etc/resolv.conf``
  alone (the pod VM resolves through its own network, not the worker's).
* ``CreateContainer``: the container joins the pod network namespace (a ``network``
  namespace with the pod netns path is appended to ``OCI.Linux.Namespaces``, replacing any
  network namespace the caller put there); missing bind-mount source directories are
  created below Kata's shared-volume roots only; CSI volumes named in the
  ``...peerpodvolumes.target_path`` annotation are waited for until mounted. Cloud volumes
  (``io.confidentialcontainers.org.cloud_volumes``) are found, mounted and bound into the
  container first (:mod:`forwarder.apf.cloudmounts`); if one fails the call fails with the
  reason and nothing it mounted is left.
* ``DestroySandbox``: the cloud volumes are unmounted (reverse order, LUKS mappers closed),
  then the call is forwarded unchanged.
* ``StartContainer``, ``RemoveContainer``: logged, forwarded unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

from forwarder.apf.cloudmounts import CloudVolumeMounts
from forwarder.apf.cloudvolumes import CLOUD_VOLUMES_KEY, CloudVolumeError, CloudVolumeSpecError
from forwarder.apf.disks import DiskNotFound
from forwarder.apf.relay import CONNECTION_CLOSED, AgentRelay
from forwarder.apf.volumes import (
    KATA_SHARED_ROOTS,
    MOUNT_WAIT_TIMEOUT,
    VOLUME_TARGET_PATH_KEY,
    MountCheck,
    MountView,
    MountWaitTimeout,
    create_missing_bind_sources,
    mountinfo_checker,
    target_paths,
    wait_mounted,
)
from protocols.kata import agent_pb2, oci_pb2
from protocols.ttrpc import CallContext, Code, TTRPCError
from protocols.ttrpc.relay import RelayPolicy
from protocols.ttrpc.status import code_name

log = logging.getLogger(__name__)

AGENT_SERVICE = "grpc.AgentService"
HEALTH_SERVICE = "grpc.Health"
NETWORK_NAMESPACE = "network"

__all__ = ["AGENT_SERVICE", "CLOUD_VOLUMES_KEY", "HEALTH_SERVICE", "Interceptor"]

M = TypeVar("M")
_CLOUD_VOLUME_CODES = {CloudVolumeSpecError: Code.INVALID_ARGUMENT, DiskNotFound: Code.NOT_FOUND}


def _decode(message_type: type[M], payload: bytes) -> M:
    message: Any = message_type()
    try:
        message.ParseFromString(payload)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise TTRPCError(Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}") from None
    return message  # type: ignore[no-any-return]


class Interceptor:
    """Serves ``grpc.AgentService`` and ``grpc.Health`` by relaying to kata-agent."""

    def __init__(
        self,
        relay: AgentRelay,
        *,
        pod_netns: str,
        pod: str = "",
        is_mounted: MountCheck | None = None,
        mount_wait_limit: float = MOUNT_WAIT_TIMEOUT,
        bind_roots: tuple[str, ...] = KATA_SHARED_ROOTS,
        cloud_volumes: CloudVolumeMounts | None = None,
    ) -> None:
        self._relay = relay
        self._netns = pod_netns
        self._pod = pod or "-"
        self._sandbox = "-"
        self._is_mounted = is_mounted or mountinfo_checker()
        self._mount_wait_limit = mount_wait_limit
        self._bind_roots = bind_roots
        self._cloud_volumes = cloud_volumes or CloudVolumeMounts()

    @property
    def label(self) -> str:
        return f"sandbox={self._sandbox} pod={self._pod}"

    def policy(self) -> RelayPolicy:
        """How the forwarder relays: every call to kata-agent, these methods looked into."""
        return RelayPolicy(
            services=frozenset({AGENT_SERVICE, HEALTH_SERVICE}),
            connect=self._relay.connect,
            lost=CONNECTION_CLOSED,
            hooks={
                "CreateSandbox": self.create_sandbox,
                "CreateContainer": self.create_container,
                "StartContainer": self.start_container,
                "RemoveContainer": self.remove_container,
                "DestroySandbox": self.destroy_sandbox,
            },
            on_error=self._failed,
            on_lost=self._relay.connection_lost,
        )

    def _failed(self, method: str, code: int, message: str) -> None:
        log.warning("%s: %s failed with error: %s: %s", self.label, method, code_name(code),
                    message)

    async def _forward(self, ctx: CallContext, payload: bytes, what: str) -> bytes:
        """The payload to send on (the relay sends it; an agent error is logged then)."""
        return payload

    # CreateSandbox ------------------------------------------------------------------------
    async def create_sandbox(self, ctx: CallContext, payload: bytes) -> bytes:
        request = _decode(agent_pb2.CreateSandboxRequest, payload)
        if request.sandbox_id:
            self._sandbox = request.sandbox_id
        log.info("%s: CreateSandbox: hostname:%s", self.label, request.hostname)
        if request.dns:
            log.info("%s: CreateSandbox: removed dns %s so /etc/resolv.conf of the pod VM is "
                     "not overwritten", self.label, ", ".join(request.dns))
            del request.dns[:]
            payload = request.SerializeToString()
        return await self._forward(ctx, payload, "CreateSandbox")

    # CreateContainer ----------------------------------------------------------------------
    async def create_container(self, ctx: CallContext, payload: bytes) -> bytes:
        request = _decode(agent_pb2.CreateContainerRequest, payload)
        cid = request.container_id
        log.info("%s: CreateContainer: containerID:%s", self.label, cid)
        if not request.HasField("OCI"):
            raise TTRPCError(Code.INVALID_ARGUMENT,
                             f"CreateContainer {cid}: request has no OCI spec")
        spec = request.OCI
        self._join_pod_netns(spec, cid)
        for ns in spec.Linux.Namespaces:
            log.info("%s: CreateContainer %s: namespace %s: %r", self.label, cid, ns.Type,
                     ns.Path)
        try:
            await self._cloud_volumes.prepare(spec, label=f"{self.label} container={cid}")
        except CloudVolumeError as exc:
            log.error("%s: CreateContainer %s: %s", self.label, cid, exc)
            raise TTRPCError(_CLOUD_VOLUME_CODES.get(type(exc), Code.INTERNAL), str(exc)) from None

        await self._prepare_mounts(spec, cid)
        return await self._forward(ctx, request.SerializeToString(), "CreateContainer")

    def _join_pod_netns(self, spec: oci_pb2.Spec, cid: str) -> None:
        """Make the pod netns the container's only network namespace. A network namespace
        the caller supplied is dropped (upstream keeps it next to ours, and which one the
        runtime then uses is up to the order)."""
        namespaces = spec.Linux.Namespaces
        supplied = [ns for ns in namespaces if ns.Type == NETWORK_NAMESPACE]
        if supplied:
            log.warning("%s: CreateContainer %s: replacing the network namespace(s) %s with "
                        "the pod network namespace", self.label, cid,
                        ", ".join(repr(ns.Path) for ns in supplied))
            kept = [ns for ns in namespaces if ns.Type != NETWORK_NAMESPACE]
            del namespaces[:]
            namespaces.extend(kept)
        namespaces.append(oci_pb2.LinuxNamespace(Type=NETWORK_NAMESPACE, Path=self._netns))

    async def _prepare_mounts(self, spec: oci_pb2.Spec, cid: str) -> None:
        mounts = [MountView(m.source, m.type, tuple(m.options)) for m in spec.Mounts]
        if not mounts:
            return
        label = f"{self.label} container={cid}"
        await asyncio.to_thread(create_missing_bind_sources, mounts, label=label,
                                roots=self._bind_roots)
        targets = target_paths(spec.Annotations.get(VOLUME_TARGET_PATH_KEY, ""))
        for mount in mounts:
            if mount.source not in targets:
                continue
            try:
                await wait_mounted(mount.source, label=label, is_mounted=self._is_mounted,
                                   limit=self._mount_wait_limit)
            except MountWaitTimeout as exc:
                raise TTRPCError(Code.DEADLINE_EXCEEDED, str(exc)) from None

    # logged only --------------------------------------------------------------------------
    async def start_container(self, ctx: CallContext, payload: bytes) -> bytes:
        request = _decode(agent_pb2.StartContainerRequest, payload)
        log.info("%s: StartContainer: containerID:%s", self.label, request.container_id)
        return await self._forward(ctx, payload, "StartContainer")

    async def remove_container(self, ctx: CallContext, payload: bytes) -> bytes:
        request = _decode(agent_pb2.RemoveContainerRequest, payload)
        log.info("%s: RemoveContainer: containerID:%s", self.label, request.container_id)
        return await self._forward(ctx, payload, "RemoveContainer")

    async def destroy_sandbox(self, ctx: CallContext, payload: bytes) -> bytes:
        _decode(agent_pb2.DestroySandboxRequest, payload)
        log.info("%s: DestroySandbox", self.label)
        await self._cloud_volumes.release(label=self.label)
        return await self._forward(ctx, payload, "DestroySandbox")
