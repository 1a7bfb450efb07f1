"""Worker-side pod network: read the pod netns at CreateVM, build the VXLAN tunnel at StartVM.

``make_worker_network("vxlan" | "none", ...)`` returns a :class:`WorkerNetwork`. The host
side (iptables rules, the VXLAN device's UDP socket) lives in the adaptor's own network
namespace; ``host_netns`` names another one by path (used by tests that build a whole
worker inside a namespace).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_network

from adaptor.network.allocator import VxlanIdAllocator
from adaptor.network.base import WorkerNetwork
from adaptor.network.discovery import PodSubnet
from adaptor.network.vxlan import NoTunnelWorkerNetwork, VxlanWorkerNetwork
from podnetwork.errors import PodNetworkError

__all__ = [
    "NoTunnelWorkerNetwork",
    "PodNetworkError",
    "VxlanIdAllocator",
    "VxlanWorkerNetwork",
    "WorkerNetwork",
    "make_worker_network",
    "parse_pod_subnets",
]

TUNNEL_TYPES = ("vxlan", "none")


def make_worker_network(
    tunnel_type: str,
    *,
    vxlan_port: int = 4789,
    vxlan_min_id: int = 555000,
    host_interface: str | None = None,
    host_netns: str | None = None,
    pod_subnets: Sequence[PodSubnet] = (),
    external_net_via_pod_vm: bool = False,
) -> WorkerNetwork:
    """The worker network for ``tunnel_type``; an unknown type is a ``ValueError``.

    ``pod_subnets`` (``POD_SUBNET_CIDRS``, see :func:`parse_pod_subnets`) become routes
    through the pod gateway in each pod's apf.json (those of the pod address's family);
    ``external_net_via_pod_vm`` (``EXTERNAL_NETWORK_VIA_PODVM``) is written there too. The
    pod VM acts on both.
    """
    if tunnel_type == "vxlan":
        return VxlanWorkerNetwork(
            vxlan_port=vxlan_port,
            vxlan_min_id=vxlan_min_id,
            host_interface=host_interface,
            host_netns=host_netns,
            pod_subnets=pod_subnets,
            external_net_via_pod_vm=external_net_via_pod_vm,
        )
    if tunnel_type == "none":
        return NoTunnelWorkerNetwork()
    raise ValueError(f"unknown tunnel type: {tunnel_type!r} (expected one of {TUNNEL_TYPES})")


def parse_pod_subnets(cidrs: Sequence[str]) -> tuple[PodSubnet, ...]:
    """``POD_SUBNET_CIDRS`` as networks; empty items are skipped.

    Upstream (podnetwork/workernode.go, ``workerNode.Inspect``) logs and skips a value
    ``netip.ParsePrefix`` rejects at every CreateVM, and a prefix with host bits set makes
    the pod VM fail to add its route; here each is refused at startup. IPv4 and IPv6
    subnets are both accepted: a pod gets those of its own address's family, through its
    gateway of that family (upstream routes an IPv6 subnet through the IPv4 gateway, which
    the pod VM fails to add).
    """
    out: list[PodSubnet] = []
    for text in (c.strip() for c in cidrs):
        if not text:
            continue
        try:
            out.append(ip_network(text))
        except ValueError as exc:
            raise ValueError(f"POD_SUBNET_CIDRS: {text!r} is not a CIDR: {exc}") from None
    return tuple(out)
