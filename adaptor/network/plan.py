"""The worker end of one tunnel as a plan: pure, computed from the pod network and the VM's
addresses. ``adaptor.network.tunnel`` applies it and removes it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address

from podnetwork.errors import PodNetworkError
from podnetwork.plan import IPAddress, NotrackRules, Redirect, VxlanDevice
from protocols.apf import PodNetwork

POD_VXLAN_INTERFACE = "vxlan1"
TEMP_PREFIX = "ppvxlan"  # + id: at most 15 characters, unique per id


@dataclass(frozen=True, slots=True)
class TunnelSite:
    """Where the worker end of one tunnel lives: all that teardown needs to know."""

    host_netns: str | None
    pod_netns: str
    pod_interface: str
    vxlan_id: int

    @property
    def temp_name(self) -> str:
        return f"{TEMP_PREFIX}{self.vxlan_id}"


@dataclass(frozen=True, slots=True)
class TunnelPlan:
    """What setup creates, in order: NOTRACK rules in the host netns, the VXLAN device
    (created in the host netns, moved into the pod netns as ``vxlan1``), two tc redirects."""

    site: TunnelSite
    notrack: NotrackRules
    vxlan: VxlanDevice
    redirects: tuple[Redirect, ...]


def tunnel_site(network: PodNetwork, pod_netns: str, host_netns: str | None) -> TunnelSite:
    return TunnelSite(
        host_netns=host_netns,
        pod_netns=pod_netns,
        pod_interface=network.interface,
        vxlan_id=network.vxlan_id,
    )


def tunnel_remote(sandbox_id: str, network: PodNetwork, vm_ips: Sequence[IPAddress]) -> IPAddress:
    """The VM address the tunnel goes to: its first, or its second for a dedicated tunnel."""
    if not network.vxlan_id or not network.vxlan_port:
        raise PodNetworkError(f"sandbox {sandbox_id}: pod network has no vxlan id/port")
    needed = 2 if network.dedicated else 1
    if len(vm_ips) < needed:
        raise PodNetworkError(
            f"sandbox {sandbox_id}: the pod VM has {len(vm_ips)} IP address(es),"
            f" the {'dedicated ' if network.dedicated else ''}tunnel needs {needed}"
        )
    return ip_address(vm_ips[needed - 1])


def plan_tunnel(
    network: PodNetwork, pod_netns: str, host_netns: str | None, remote: IPAddress
) -> TunnelPlan:
    site = tunnel_site(network, pod_netns, host_netns)
    pod_if = network.interface
    return TunnelPlan(
        site=site,
        notrack=NotrackRules(host_netns, remote, network.vxlan_port, network.vxlan_id),
        vxlan=VxlanDevice(
            netns=host_netns,
            name=site.temp_name,
            vxlan_id=network.vxlan_id,
            port=network.vxlan_port,
            remote=remote,
            target_netns=pod_netns,
            target_name=POD_VXLAN_INTERFACE,
        ),
        redirects=(
            Redirect(pod_netns, pod_if, POD_VXLAN_INTERFACE),
            Redirect(pod_netns, POD_VXLAN_INTERFACE, pod_if),
        ),
    )
