"""The shim's hypervisor client (:mod:`adaptor.shimclient`) with the tests' defaults."""

from __future__ import annotations

from collections.abc import Mapping

from adaptor import annotations as ann
from adaptor.shimclient import ShimClient
from adaptor.shimclient import shim_annotations as _shim_annotations

POD_NAME = ann.SANDBOX_NAME
POD_NAMESPACE = ann.SANDBOX_NAMESPACE
HV_PREFIX = "io.katacontainers.config.hypervisor."


def shim_annotations(pod: str = "web", namespace: str = "default", **hv: str) -> dict[str, str]:
    """The annotations the Go shim always sends, with ``hv`` (short hypervisor annotation
    names: ``machine_type="t3.small"``) set on top."""
    out = _shim_annotations(pod=pod, namespace=namespace)
    for key, value in hv.items():
        out[HV_PREFIX + key] = value
    return out


class Shim(ShimClient):
    async def create_vm(
        self, sandbox_id: str, annotations: Mapping[str, str] | None = None,
        netns: str = "/var/run/netns/cni-test", timeout: float | None = 30,
    ) -> str:
        annotations = shim_annotations() if annotations is None else annotations
        return await super().create_vm(sandbox_id, annotations, netns, timeout)

    async def stop_vm(self, sandbox_id: str, timeout: float | None = 60) -> None:
        await super().stop_vm(sandbox_id, timeout)
