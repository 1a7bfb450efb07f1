"""Reading the pod network (pod netns) and the worker's tunnel endpoint (host netns)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network

from adaptor.network import netlink
from podnetwork import links
from podnetwork.errors import PodNetworkError
from protocols.apf import PodNetwork, Route


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


def read_pod(
    netns_path: str, tunnel_type: str, extra_subnets: Sequence[IPv4Network] = ()
) -> PodNetwork:
    """Interface, single IPv4 address, MAC, MTU, routes and permanent neighbours of the pod.

    Each of ``extra_subnets`` (``POD_SUBNET_CIDRS``) adds a route through the pod's gateway
    on the pod interface (:func:`subnet_routes`).
    """
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
            routes=subnet_routes(
                netlink.read_routes(ipr), extra_subnets, default.gateway, default.ifname
            ),
            neighbors=netlink.permanent_neighbors(ipr, index, default.ifname),
            mtu=link.get_attr("IFLA_MTU") or 0,
        )


def subnet_routes(
    routes: tuple[Route, ...], subnets: Sequence[IPv4Network], gateway: str, interface: str
) -> tuple[Route, ...]:
    """``routes`` plus ``<subnet> via <gateway> dev <interface>`` for each extra subnet.

    As upstream (podnetwork/workernode.go, ``workerNode.Inspect``): the gateway is that of
    the pod's primary default route, the device the pod interface, appended after the
    routes read from the pod netns. A subnet the pod netns already routes is skipped: the
    pod VM would fail to add the same route twice.
    """
    present = {route.dst for route in routes}
    extra = tuple(
        Route(dst=str(subnet), gw=gateway, dev=interface)
        for subnet in dict.fromkeys(subnets)
        if str(subnet) not in present
    )
    return routes + extra
