"""``EXTERNAL_NETWORK_VIA_PODVM`` in the pod VM: the VM's second NIC becomes the pod's way out.

As upstream (podnetwork/common.go, ``setupExternalNetwork``, ``getSecondaryInterfaceDetails``
and ``moveInterfaceToNamespace``), once the tunnel and the pod's routes are in place:

- the secondary interface is the first link, in index order, that is not the primary, is not
  named like a virtual device (``veth lo docker podman br- cni tunl tun tap``) and has an
  IPv4 address, and either has a default route of its own or sits in the primary's subnet
  (then its default route is the primary's gateway, through it, with no metric);
- it is moved into the pod netns, given its address again and brought up; every default
  route of the pod netns is replaced by the secondary's. The pod's subnet and the routes
  read on the worker (``POD_SUBNET_CIDRS`` among them) stay on the tunnel. No NAT: the pod
  leaves with the secondary's own address.

Teardown (which upstream does not have) moves the interface back into the VM's namespace
with its address and, when it had one, its default route, so a restarted forwarder finds it
again. Blocking netlink: run in a worker thread.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from ipaddress import IPv4Interface
from typing import Any

from podnetwork import links
from podnetwork.errors import PodNetworkError

OWN_NETNS = "/proc/thread-self/ns/net"
RTPROT_BOOT = 3  # what a new route carries unless told otherwise (ip route, netlink)
RT_SCOPE_NOWHERE = 255  # with "del": a route of any scope
FILTERED_PREFIXES = ("veth", "lo", "docker", "podman", "br-", "cni", "tunl", "tun", "tap")


@dataclass(frozen=True, slots=True)
class ExternalLink:
    """The secondary interface as found in the VM's namespace, and its way out."""

    name: str
    address: IPv4Interface
    gateway: str  # "" for a default route without a gateway
    priority: int
    proto: int
    own_route: bool  # False: the route is the primary's gateway (same subnet)


def is_filtered(name: str) -> bool:
    return name.startswith(FILTERED_PREFIXES)


def _first_ipv4(ipr: Any, index: int) -> IPv4Interface | None:
    found = [a for a in links.addresses(ipr, index) if isinstance(a, IPv4Interface)]
    return found[0] if found else None


def find_secondary(ipr: Any, primary: str) -> ExternalLink:
    """Upstream's choice of secondary interface (module docstring); raises
    :class:`PodNetworkError` when there is none."""
    routes = {route.ifname: route for route in reversed(links.default_routes(ipr))}
    primary_index = links.find_index(ipr, primary)
    primary_route = routes.get(primary)
    if primary_index is None or primary_route is None:
        raise PodNetworkError(f"default route for primary interface ({primary!r}) is nil")
    primary_address = _first_ipv4(ipr, primary_index)
    for link in sorted(ipr.get_links(), key=lambda msg: msg["index"]):
        name = links.attr(link, "IFLA_IFNAME", "")
        if name == primary or is_filtered(name):
            continue
        address = _first_ipv4(ipr, link["index"])
        if address is None:
            continue
        own = routes.get(name)
        if own is not None:
            return ExternalLink(name, address, own.gateway, own.priority, own.proto,
                                own_route=True)
        if primary_address is not None and address.network == primary_address.network:
            # upstream's inferred route has the primary's gateway, nothing else of it
            return ExternalLink(name, address, primary_route.gateway, 0, RTPROT_BOOT,
                                own_route=False)
    raise PodNetworkError("no valid secondary interface found")


def attach(vm_netns: str | None, pod_netns: str, primary: str) -> ExternalLink:
    """Find the secondary interface, move it into the pod netns and route the pod's default
    traffic through it. On failure what was moved goes back (:func:`detach`)."""
    with links.open_netns(vm_netns) as vm:
        ext = find_secondary(vm, primary)
        index = links.find_index(vm, ext.name)
        if index is None:
            raise PodNetworkError(f"{ext.name} vanished")
        links.move_link(vm, index, pod_netns)
    try:
        with links.open_netns(pod_netns) as pod:
            _configure(pod, ext)
            for route in links.default_routes(pod, multipath=False):
                pod.route("del", dst="0.0.0.0", dst_len=0, oif=route.index,
                          family=socket.AF_INET, priority=route.priority,
                          scope=RT_SCOPE_NOWHERE, proto=0)
            _add_default(pod, ext)
    except BaseException:
        detach(vm_netns, pod_netns, ext)
        raise
    return ext


def detach(vm_netns: str | None, pod_netns: str, ext: ExternalLink) -> None:
    """Move the secondary interface back into the VM's namespace, address and route again;
    nothing to do when it is not in the pod netns (any more)."""
    if not os.path.exists(pod_netns):
        return
    with links.open_netns(pod_netns) as pod:
        index = links.find_index(pod, ext.name)
        if index is None:
            return
        # this thread is back in its own namespace once the socket exists
        links.move_link(pod, index, vm_netns or OWN_NETNS)
    with links.open_netns(vm_netns) as vm:
        _configure(vm, ext)
        if ext.own_route:
            _add_default(vm, ext)


def _configure(ipr: Any, ext: ExternalLink) -> None:
    index = links.find_index(ipr, ext.name)
    if index is None:
        raise PodNetworkError(f"{ext.name} vanished after the move")
    address = ext.address
    if address not in links.addresses(ipr, index):
        ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
    ipr.link("set", index=index, state="up")


def _add_default(ipr: Any, ext: ExternalLink) -> None:
    index = links.find_index(ipr, ext.name)
    args: dict[str, Any] = {"dst": "0.0.0.0", "dst_len": 0, "oif": index,
                            "family": socket.AF_INET, "proto": ext.proto}
    if ext.gateway:
        args["gateway"] = ext.gateway
    if ext.priority:
        args["priority"] = ext.priority
    ipr.route("add", **args)
