"""Reading the pod network (pod netns) and the worker's tunnel endpoint (host netns)."""

from __future__ import annotations

from dataclasses import dataclass

from adaptor.network import netlink
from podnetwork import links
from podnetwork.errors import PodNetworkError
from protocols.apf import PodNetwork


@dataclass(frozen=True, slots=True)
class HostEndpoint:
    interface: str
    worker_node_ip: str  # CIDR
    dedicated: bool


def read_host(host_netns: str | None, host_interface: str | None) -> HostEndpoint:
    """The worker's tunnel interface: the primary one, or ``host_interface`` (dedicated)."""
    with links.open_netns(host_netns) as ipr:
        primary = netlink.primary_interface(ipr, host_netns)
        name = host_interface or primary.ifname
        link = netlink.require_link(ipr, name, host_netns)
        addrs = links.addresses(ipr, link["index"])
        if not addrs:
            raise PodNetworkError(
                f"host interface {name} has no IP address in {netlink.where(host_netns)}"
            )
        return HostEndpoint(
            interface=name,
            worker_node_ip=str(addrs[0]),
            dedicated=name != primary.ifname,
        )


def read_pod(netns_path: str, tunnel_type: str) -> PodNetwork:
    """Interface, single IPv4 address, MAC, MTU, routes and permanent neighbours of the pod."""
    with links.open_netns(netns_path) as ipr:
        default = netlink.primary_interface(ipr, netns_path)
        link = links.find_link(ipr, default.ifname) if default.ifname else None
        if link is None:
            raise PodNetworkError(
                f"default route interface {default.ifname or f'#{default.index}'}"
                f" not found in network namespace {netns_path}"
            )
        index = link["index"]
        v4 = [a for a in links.addresses(ipr, index) if a.version == 4]
        if len(v4) != 1:
            found = ", ".join(str(a) for a in v4) or "none"
            raise PodNetworkError(
                f"pod interface {default.ifname} in network namespace {netns_path} must have"
                f" exactly one IPv4 address, found {len(v4)}: {found}"
            )
        return PodNetwork(
            tunnel_type=tunnel_type,
            pod_ip=str(v4[0]),
            pod_hw_addr=link.get_attr("IFLA_ADDRESS") or "",
            interface=default.ifname,
            routes=netlink.read_routes(ipr),
            neighbors=netlink.permanent_neighbors(ipr, index, default.ifname),
            mtu=link.get_attr("IFLA_MTU") or 0,
        )
