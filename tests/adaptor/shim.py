"""Drives the adaptor as the Kata shim does: a new connection per hypervisor call."""

from __future__ import annotations

from collections.abc import Mapping

from protocols.kata import hypervisor_pb2, podvminfo_pb2
from protocols.ttrpc import Client

HV = "hypervisor.Hypervisor"
POD_NAME = "io.kubernetes.cri.sandbox-name"
POD_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
HV_PREFIX = "io.katacontainers.config.hypervisor."
SHIM_KEYS = ("machine_type", "image", "default_vcpus", "default_memory", "cc_init_data",
             "default_gpus", "default_gpu_model")


def shim_annotations(pod: str = "web", namespace: str = "default", **hv: str) -> dict[str, str]:
    """The annotations the Go shim always sends (empty when the pod sets nothing)."""
    out = {POD_NAME: pod, POD_NAMESPACE: namespace}
    for key in SHIM_KEYS:
        out[HV_PREFIX + key] = ""
    out[HV_PREFIX + "default_vcpus"] = "0"
    out[HV_PREFIX + "default_memory"] = "0"
    for key, value in hv.items():
        out[HV_PREFIX + key] = value
    return out


class Shim:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    async def create_vm(
        self, sid: str, annotations: Mapping[str, str] | None = None,
        netns: str = "/var/run/netns/cni-test",
    ) -> str:
        request = hypervisor_pb2.CreateVMRequest(
            id=sid,
            annotations=dict(shim_annotations() if annotations is None else annotations),
            networkNamespacePath=netns,
        )
        async with await Client.connect_unix(self.socket_path) as client:
            response = await client.call(HV, "CreateVM", request,
                                         hypervisor_pb2.CreateVMResponse, timeout=30)
        return response.agentSocketPath

    async def start_vm(self, sid: str, timeout: float | None = 600) -> None:
        async with await Client.connect_unix(self.socket_path) as client:
            await client.call(HV, "StartVM", hypervisor_pb2.StartVMRequest(id=sid),
                              hypervisor_pb2.StartVMResponse, timeout=timeout)

    async def stop_vm(self, sid: str) -> None:
        async with await Client.connect_unix(self.socket_path) as client:
            await client.call(HV, "StopVM", hypervisor_pb2.StopVMRequest(id=sid),
                              hypervisor_pb2.StopVMResponse, timeout=60)

    async def version(self) -> str:
        async with await Client.connect_unix(self.socket_path) as client:
            response = await client.call(HV, "Version", hypervisor_pb2.VersionRequest(),
                                         hypervisor_pb2.VersionResponse, timeout=5)
        return response.version

    async def get_info(
        self, pod: str, namespace: str, wait: bool = False, timeout: float | None = 5
    ) -> str:
        request = podvminfo_pb2.GetInfoRequest(PodName=pod, PodNamespace=namespace, Wait=wait)
        async with await Client.connect_unix(self.socket_path) as client:
            response = await client.call("podvminfo.PodVMInfo", "GetInfo", request,
                                         podvminfo_pb2.GetInfoResponse, timeout=timeout)
        return response.VMID
