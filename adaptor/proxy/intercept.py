"""The agent calls the proxy looks into. Everything else passes through as raw bytes.

``CreateContainer`` is decoded: its mounts, storages and devices are logged in upstream's
format (e2e tooling greps ``mount_point:... driver:image_guest_pull``), and a container whose
OCI annotations ask for GPUs (``...hypervisor.default_gpus`` non-empty) gets the CDI
annotation ``cdi.k8s.io/peer-pods: nvidia.com/gpu=all``. The pod's CSI block volumes get
the ``peerpodvolumes.target_path`` and ``cloud_volumes`` annotations
(:mod:`adaptor.proxy.cloudvolumes`).
"""

from __future__ import annotations

import logging

from google.protobuf.message import DecodeError

from adaptor.proxy.cloudvolumes import Mount, annotate
from adaptor.volumes import DIRECT_VOLUMES_DIR, VolumeError
from protocols.kata import agent_pb2
from protocols.ttrpc import Code, TTRPCError

log = logging.getLogger(__name__)

IMAGE_GUEST_PULL = "image_guest_pull"
CDI_ANNOTATION = "cdi.k8s.io/peer-pods"
CDI_GPU_ALL = "nvidia.com/gpu=all"
DEFAULT_GPUS_ANNOTATION = "io.katacontainers.config.hypervisor.default_gpus"

LOG_ONLY = ("CreateSandbox", "DestroySandbox", "StartContainer", "RemoveContainer", "SetPolicy")


def rewrite_create_container(
    sandbox_id: str, payload: bytes, *, direct_volumes_dir: str = DIRECT_VOLUMES_DIR
) -> bytes:
    """Log a CreateContainerRequest, apply the GPU rule and add the volume annotations
    (volumes found in ``direct_volumes_dir``); return the payload to forward."""
    request = agent_pb2.CreateContainerRequest()
    try:
        request.ParseFromString(payload)
    except DecodeError as exc:
        raise TTRPCError(
            Code.INVALID_ARGUMENT, f"CreateContainer: cannot decode request: {exc}"
        ) from None
    log.info("sandbox=%s: CreateContainer: containerID:%s", sandbox_id, request.container_id)
    oci = request.OCI
    for mount in oci.Mounts:
        log.info(
            "sandbox=%s:     mount destination:%s source:%s type:%s",
            sandbox_id, mount.destination, mount.source, mount.type,
        )
    guest_pull = False
    for storage in request.storages:
        log.info(
            "sandbox=%s:     mount_point:%s source:%s fstype:%s driver:%s",
            sandbox_id, storage.mount_point, storage.source, storage.fstype, storage.driver,
        )
        guest_pull = guest_pull or storage.driver == IMAGE_GUEST_PULL
    for device in request.devices:
        log.info(
            "sandbox=%s:     device container_path:%s vm_path:%s type:%s",
            sandbox_id, device.container_path, device.vm_path, device.type,
        )
    if not guest_pull:
        log.warning(
            "sandbox=%s: CreateContainer %s has no %s storage: pulling images outside the pod "
            "VM is not supported; use the nydus snapshotter's guest pull",
            sandbox_id, request.container_id, IMAGE_GUEST_PULL,
        )
    changed = _annotate_volumes(sandbox_id, request, direct_volumes_dir)
    if oci.Annotations.get(DEFAULT_GPUS_ANNOTATION, ""):
        oci.Annotations[CDI_ANNOTATION] = CDI_GPU_ALL
        changed = True
        log.info(
            "sandbox=%s: adding CDI annotation %s: %s", sandbox_id, CDI_ANNOTATION, CDI_GPU_ALL
        )
    return request.SerializeToString() if changed else payload


def _annotate_volumes(
    sandbox_id: str, request: agent_pb2.CreateContainerRequest, directory: str
) -> bool:
    mounts = [Mount(m.source, m.destination) for m in request.OCI.Mounts]
    try:
        return annotate(sandbox_id, mounts, request.OCI.Annotations, directory)
    except VolumeError as exc:
        raise TTRPCError(Code.INVALID_ARGUMENT, f"CreateContainer: {exc}") from None
