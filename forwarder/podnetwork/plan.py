"""The pod VM end of the tunnel as a plan: pure, computed from the ``pod-network`` of
apf.json and whether the pod netns exists. ``forwarder.podnetwork.apply`` runs it.

What the plan says (upstream's design): NOTRACK rules for the worker's VXLAN traffic in the
VM's namespace; ``vxlan0`` created there (remote = worker, same id and port), moved into the
pod netns and renamed to the pod's interface name, with the pod's MAC, MTU (at most 1450)
and IP; the kernel's subnet route dropped (unless /32); then the routes, those without a
gateway first (on-link gateways must be reachable), then the neighbours.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, ip_address, ip_interface

from podnetwork.errors import PodNetworkError
from podnetwork.plan import IPAddress, NotrackRules, VxlanDevice
from protocols.apf import Neighbor, PodNetwork, Route

VM_VXLAN_INTERFACE = "vxlan0"
MAX_MTU = 1450
NETNS_DIRS = ("/run/netns", "/var/run/netns")
PROTOCOL_NUMBERS = {"": 0, "static": 4, "boot": 3, "dhcp": 16, "kernel": 2}
SCOPE_NUMBERS = {"": 0, "universe": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}
NEIGHBOR_STATES = {
    "": 0x80,  # upstream's zero state is "none"; an entry we add is meant to stay
    "none": 0x00,
    "incomplete": 0x01,
    "reachable": 0x02,
    "stale": 0x04,
    "delay": 0x08,
    "probe": 0x10,
    "failed": 0x20,
    "noarp": 0x40,
    "permanent": 0x80,
}


@dataclass(frozen=True, slots=True)
class PodLink:
    """The pod interface, as ``vxlan0`` becomes once in the pod netns."""

    name: str
    mac: str
    mtu: int
    address: IPv4Interface | IPv6Interface

    @property
    def drop_subnet_route(self) -> bool:
        """As upstream: the kernel's subnet route goes (PTP/GKE CNIs need this); the routes
        read on the worker put it back for ordinary CNIs."""
        return self.address.network.prefixlen != self.address.max_prefixlen


@dataclass(frozen=True, slots=True)
class PlannedRoute:
    route: Route  # as in apf.json, for messages
    dev: str  # the device it goes through (the pod interface unless the route names one)
    family: int
    dst: str
    dst_len: int
    gateway: str
    proto: int
    scope: int


@dataclass(frozen=True, slots=True)
class PlannedNeighbor:
    neighbor: Neighbor  # as in apf.json, for messages
    dev: str
    address: str
    family: int
    state: int


@dataclass(frozen=True, slots=True)
class PodNetworkPlan:
    network: PodNetwork
    pod_netns: str
    vm_netns: str | None
    create_netns: bool  # the pod netns does not exist yet: create it (with lo up)
    notrack: NotrackRules
    vxlan: VxlanDevice
    link: PodLink
    routes: tuple[PlannedRoute, ...]
    neighbors: tuple[PlannedNeighbor, ...]

    @property
    def worker_ip(self) -> IPAddress:
        return self.notrack.peer


def validate(network: PodNetwork) -> IPAddress:
    """The worker's address, once ``network`` has all a VXLAN tunnel needs."""
    if not network.interface:
        raise PodNetworkError("pod-network: interface is not specified")
    if not network.pod_ip:
        raise PodNetworkError("pod-network: podip is not specified")
    if not network.worker_node_ip:
        raise PodNetworkError("pod-network: worker-node-ip is not specified")
    if not network.vxlan_id or not network.vxlan_port:
        raise PodNetworkError("pod-network: vxlan-id and vxlan-port are required")
    try:
        ip_interface(network.pod_ip)
        return ip_interface(network.worker_node_ip).ip
    except ValueError as exc:
        raise PodNetworkError(f"pod-network: {exc}") from None


def plan_pod_network(
    network: PodNetwork, *, pod_netns: str, vm_netns: str | None, netns_exists: bool
) -> PodNetworkPlan:
    """The plan for ``network``; ``netns_exists``: whether ``pod_netns`` exists already."""
    worker_ip = validate(network)
    if not netns_exists:
        directory, name = os.path.split(pod_netns)
        if directory not in NETNS_DIRS or not name:
            raise PodNetworkError(f"pod network namespace {pod_netns} does not exist")
    pod_if = network.interface
    # Routes without a gateway first: on-link gateways (Calico) must be reachable.
    ordered = [r for r in network.routes if not r.gw] + [r for r in network.routes if r.gw]
    return PodNetworkPlan(
        network=network,
        pod_netns=pod_netns,
        vm_netns=vm_netns,
        create_netns=not netns_exists,
        notrack=NotrackRules(vm_netns, worker_ip, network.vxlan_port, network.vxlan_id),
        vxlan=VxlanDevice(
            netns=vm_netns,
            name=VM_VXLAN_INTERFACE,
            vxlan_id=network.vxlan_id,
            port=network.vxlan_port,
            remote=worker_ip,
            target_netns=pod_netns,
            target_name=pod_if,
        ),
        link=PodLink(
            name=pod_if,
            mac=network.pod_hw_addr,
            mtu=min(network.mtu, MAX_MTU) if network.mtu else MAX_MTU,
            address=ip_interface(network.pod_ip),
        ),
        routes=tuple(_plan_route(route, pod_if) for route in ordered),
        neighbors=tuple(_plan_neighbor(neighbor, pod_if) for neighbor in network.neighbors),
    )


def _plan_route(route: Route, pod_if: str) -> PlannedRoute:
    name = route.dst or "default"
    if route.protocol not in PROTOCOL_NUMBERS:
        raise PodNetworkError(f"route {name}: unknown protocol {route.protocol!r}")
    if route.scope not in SCOPE_NUMBERS:
        raise PodNetworkError(f"route {name}: unknown scope {route.scope!r}")
    try:
        net = ip_interface(route.dst).network if route.dst else None
        gw_version = ip_address(route.gw).version if route.gw else None
    except ValueError as exc:
        raise PodNetworkError(f"route {name}: {exc}") from None
    family = socket.AF_INET6 if net is not None and net.version == 6 else socket.AF_INET
    if gw_version is not None:
        family = socket.AF_INET6 if gw_version == 6 else socket.AF_INET
    return PlannedRoute(
        route=route,
        dev=route.dev or pod_if,
        family=family,
        dst=str(net.network_address) if net is not None else "0.0.0.0",
        dst_len=net.prefixlen if net is not None else 0,
        gateway=route.gw,
        proto=PROTOCOL_NUMBERS[route.protocol],
        scope=SCOPE_NUMBERS[route.scope],
    )


def _plan_neighbor(neighbor: Neighbor, pod_if: str) -> PlannedNeighbor:
    if neighbor.state not in NEIGHBOR_STATES:
        raise PodNetworkError(f"neighbor {neighbor.ip}: unknown state {neighbor.state!r}")
    try:
        address = ip_address(neighbor.ip)
    except ValueError as exc:
        raise PodNetworkError(f"neighbor {neighbor.ip}: {exc}") from None
    return PlannedNeighbor(
        neighbor=neighbor,
        dev=neighbor.dev or pod_if,
        address=str(address),
        family=socket.AF_INET if address.version == 4 else socket.AF_INET6,
        state=NEIGHBOR_STATES[neighbor.state],
    )
