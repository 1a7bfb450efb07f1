"""Worker-side pod network: read the pod netns at CreateVM, build the VXLAN tunnel at StartVM.

``make_worker_network("vxlan" | "none", ...)`` returns a :class:`WorkerNetwork`. The host
side (iptables rules, the VXLAN device's UDP socket) lives in the adaptor's own network
namespace; ``host_netns`` names another one by path (used by tests that build a whole
worker inside a namespace).
"""

from __future__ import annotations

from adaptor.network.allocator import VxlanIdAllocator
from adaptor.network.base import WorkerNetwork
from adaptor.network.vxlan import NoTunnelWorkerNetwork, VxlanWorkerNetwork
from podnetwork.errors import PodNetworkError

__all__ = [
    "NoTunnelWorkerNetwork",
    "PodNetworkError",
    "VxlanIdAllocator",
    "VxlanWorkerNetwork",
    "WorkerNetwork",
    "make_worker_network",
]

TUNNEL_TYPES = ("vxlan", "none")


def make_worker_network(
    tunnel_type: str,
    *,
    vxlan_port: int = 4789,
    vxlan_min_id: int = 555000,
    host_interface: str | None = None,
    host_netns: str | None = None,
) -> WorkerNetwork:
    """The worker network for ``tunnel_type``; an unknown type is a ``ValueError``."""
    if tunnel_type == "vxlan":
        return VxlanWorkerNetwork(
            vxlan_port=vxlan_port,
            vxlan_min_id=vxlan_min_id,
            host_interface=host_interface,
            host_netns=host_netns,
        )
    if tunnel_type == "none":
        return NoTunnelWorkerNetwork()
    raise ValueError(f"unknown tunnel type: {tunnel_type!r} (expected one of {TUNNEL_TYPES})")
