"""Blocking netlink reads of the worker end (pyroute2): the host's tunnel interface and the
pod's routes and neighbours. The helpers both ends share are in :mod:`podnetwork.links`."""

from __future__ import annotations

import socket
from ipaddress import ip_address
from typing import Any

from podnetwork.errors import PodNetworkError
from podnetwork.links import (
    RT_TABLE_MAIN,
    RTN_UNICAST,
    DefaultRoute,
    attr,
    default_routes,
    find_link,
    link_names,
    pick_primary,
)
from podnetwork.links import where as _where
from protocols.apf import Neighbor, Route

NUD_PERMANENT = 0x80
RTPROT_KERNEL = 2
# Route protocols upstream reads and can write back (netops RouteList default filters).
PROTOCOL_NAMES = {4: "static", 3: "boot", 16: "dhcp", 2: "kernel"}
SCOPE_NAMES = {0: "", 200: "site", 253: "link", 254: "host", 255: "nowhere"}


def where(path: str | None) -> str:
    return _where(path, "the host network namespace")


def primary_interface(ipr: Any, path: str | None) -> DefaultRoute:
    """The device of the IPv4 default route with the lowest priority (upstream's rule)."""
    best = pick_primary(default_routes(ipr))
    if best is None:
        raise PodNetworkError(f"no IPv4 default route in {where(path)}")
    return best


def pod_default_route(ipr: Any, path: str) -> DefaultRoute:
    """The pod's primary default route: the IPv4 one (upstream's rule), or, in a pod
    without one (IPv6-only), the IPv6 default route with the lowest priority."""
    best = pick_primary(default_routes(ipr)) or pick_primary(
        default_routes(ipr, family=socket.AF_INET6)
    )
    if best is None:
        raise PodNetworkError(f"no IPv4 or IPv6 default route in {where(path)}")
    return best


def family_default_route(ipr: Any, family: int, index: int) -> DefaultRoute | None:
    """The lowest-priority default route of ``family`` through link ``index``, if any."""
    return pick_primary([r for r in default_routes(ipr, family=family) if r.index == index])


def require_link(ipr: Any, ifname: str, path: str | None) -> Any:
    link = find_link(ipr, ifname)
    if link is None:
        raise PodNetworkError(f"interface {ifname} not found in {where(path)}")
    return link


def read_routes(ipr: Any, family: int = socket.AF_INET) -> tuple[Route, ...]:
    """Unicast routes of ``family`` in the main table with a protocol upstream understands.

    Sorted like upstream (destination address, prefix length, priority); the default route
    is written ``0.0.0.0/0`` (``::/0``). The kernel's link-local route ``fe80::/64`` is left
    out: the kernel makes it on every IPv6 interface, the pod VM's included, where adding
    it again would only leave a duplicate at another metric.
    """
    names = link_names(ipr)
    rows: list[tuple[bytes, int, int, Route]] = []
    unspecified = "::" if family == socket.AF_INET6 else "0.0.0.0"
    for msg in ipr.get_routes(family=family, table=RT_TABLE_MAIN):
        if msg["type"] != RTN_UNICAST or msg["proto"] not in PROTOCOL_NAMES:
            continue
        dst = attr(msg, "RTA_DST", unspecified)
        dst_len = msg["dst_len"]
        if family == socket.AF_INET6 and msg["proto"] == RTPROT_KERNEL and dst_len == 64:
            if ip_address(dst).is_link_local:
                continue
        oif = attr(msg, "RTA_OIF", 0)
        route = Route(
            dst=f"{dst}/{dst_len}",
            gw=attr(msg, "RTA_GATEWAY", ""),
            dev=names.get(oif, "") if oif else "",
            protocol=PROTOCOL_NAMES[msg["proto"]],
            scope=SCOPE_NAMES.get(msg["scope"], ""),
        )
        rows.append((ip_address(dst).packed, dst_len, attr(msg, "RTA_PRIORITY", 0), route))
    rows.sort(key=lambda row: row[:3])
    return tuple(row[3] for row in rows)


def permanent_neighbors(
    ipr: Any, index: int, ifname: str, family: int = socket.AF_INET
) -> tuple[Neighbor, ...]:
    out: list[Neighbor] = []
    for msg in ipr.get_neighbours(family=family, ifindex=index):
        if not msg["state"] & NUD_PERMANENT:
            continue
        out.append(
            Neighbor(
                ip=attr(msg, "NDA_DST", ""),
                hw_addr=attr(msg, "NDA_LLADDR", ""),
                dev=ifname,
                state="permanent",
            )
        )
    return tuple(out)
