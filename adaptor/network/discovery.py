"""Reading the pod network (pod netns) and the worker's tunnel endpoint (host netns)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network

from adaptor.network import netlink
from podnetwork import links
from podnetwork.errors import PodNetworkError
from protocols.apf import PodNetwork, Route

PodSubnet = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class HostEndpoint:
    interface: str
    worker_node_ip: str  # CIDR
    dedicated: bool


@dataclass(frozen=True, slots=True)
class PodReading:
    """The pod network for apf.json, and the pod's global IPv6 addresses it leaves out (a
    dual-stack pod: apf.json has room for one pod address, and that one is the IPv4)."""

    network: PodNetwork
    unused: tuple[IPv6Interface, ...] = ()


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
    netns_path: str, tunnel_type: str, extra_subnets: Sequence[PodSubnet] = ()
) -> PodReading:
    """Interface, address, MAC, MTU, routes and permanent neighbours of the pod.

    The pod interface is the device of the IPv4 default route (upstream's rule), or of the
    IPv6 one in a pod without an IPv4 default route. The pod address is its one IPv4
    address (upstream's rule), or, on an interface without IPv4, its one global IPv6
    address (an IPv6-only pod). Routes and neighbours are those of the address's family.
    Each of ``extra_subnets`` (``POD_SUBNET_CIDRS``) of that family adds a route through
    the pod's gateway on the pod interface (:func:`subnet_routes`).
    """
    with links.open_netns(netns_path) as ipr:
        default = netlink.pod_default_route(ipr, netns_path)
        link = links.find_link(ipr, default.ifname) if default.ifname else None
        if link is None:
            raise PodNetworkError(
                f"default route interface {default.ifname or f'#{default.index}'}"
                f" not found in network namespace {netns_path}"
            )
        index = link["index"]
        pod_ip, unused = pod_address(links.addresses(ipr, index), default.ifname, netns_path)
        family = socket.AF_INET if pod_ip.version == 4 else socket.AF_INET6
        gateway = netlink.family_default_route(ipr, family, index)
        network = PodNetwork(
            tunnel_type=tunnel_type,
            pod_ip=str(pod_ip),
            pod_hw_addr=link.get_attr("IFLA_ADDRESS") or "",
            interface=default.ifname,
            routes=subnet_routes(
                netlink.read_routes(ipr, family),
                [s for s in extra_subnets if s.version == pod_ip.version],
                gateway.gateway if gateway is not None else "",
                default.ifname,
            ),
            neighbors=netlink.permanent_neighbors(ipr, index, default.ifname, family),
            mtu=link.get_attr("IFLA_MTU") or 0,
        )
        return PodReading(network, unused)


def pod_address(
    addrs: Sequence[IPv4Interface | IPv6Interface], ifname: str, netns_path: str
) -> tuple[IPv4Interface | IPv6Interface, tuple[IPv6Interface, ...]]:
    """The pod address among the pod interface's ``addrs``, and the global IPv6 addresses
    left out (those of a dual-stack pod). Link-local addresses never count."""
    v4 = [a for a in addrs if isinstance(a, IPv4Interface)]
    v6 = [a for a in addrs if isinstance(a, IPv6Interface) and not a.ip.is_link_local]
    where = f"pod interface {ifname} in network namespace {netns_path}"
    if len(v4) == 1:
        return v4[0], tuple(v6)
    if v4:
        raise PodNetworkError(
            f"{where} must have exactly one IPv4 address,"
            f" found {len(v4)}: {', '.join(str(a) for a in v4)}"
        )
    if len(v6) == 1:
        return v6[0], ()
    raise PodNetworkError(
        f"{where} must have exactly one IPv4 address, found 0: none, or exactly one global"
        f" IPv6 address, found {len(v6)}: {', '.join(str(a) for a in v6) or 'none'}"
    )


def subnet_routes(
    routes: tuple[Route, ...], subnets: Sequence[PodSubnet], gateway: str, interface: str
) -> tuple[Route, ...]:
    """``routes`` plus ``<subnet> via <gateway> dev <interface>`` for each extra subnet.

    As upstream (podnetwork/workernode.go, ``workerNode.Inspect``): the gateway is that of
    the pod's default route, the device the pod interface, appended after the routes read
    from the pod netns. A subnet the pod netns already routes is skipped: the pod VM would
    fail to add the same route twice.
    """
    present = {route.dst for route in routes}
    extra = tuple(
        Route(dst=str(subnet), gw=gateway, dev=interface)
        for subnet in dict.fromkeys(subnets)
        if str(subnet) not in present
    )
    return routes + extra
