"""Blocking netlink reads and link moves (pyroute2); callers run these in a worker thread."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
    ip_interface,
)
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from podnetwork.errors import PodNetworkError
from podnetwork.netns import NetnsError, iproute
from protocols.apf import Neighbor, Route

RT_TABLE_MAIN = 254
RTN_UNICAST = 1
NUD_PERMANENT = 0x80
# Route protocols upstream reads and can write back (netops RouteList default filters).
PROTOCOL_NAMES = {4: "static", 3: "boot", 16: "dhcp", 2: "kernel"}
SCOPE_NAMES = {0: "", 200: "site", 253: "link", 254: "host", 255: "nowhere"}


@contextmanager
def open_netns(path: str | None) -> Iterator[Any]:
    """A netlink socket in the namespace at ``path`` (``None``: this process's namespace).

    Never creates a namespace: a missing path is a :class:`PodNetworkError`.
    """
    try:
        ipr: Any = iproute(path)
    except NetnsError as exc:
        raise PodNetworkError(str(exc)) from None
    try:
        yield ipr
    finally:
        ipr.close()


def where(path: str | None) -> str:
    return f"network namespace {path}" if path else "the host network namespace"


@dataclass(frozen=True, slots=True)
class DefaultRoute:
    ifname: str
    index: int
    gateway: str
    priority: int


def _attr(msg: Any, name: str, default: Any = None) -> Any:
    value = msg.get_attr(name)
    return default if value is None else value


def link_names(ipr: Any) -> dict[int, str]:
    return {link["index"]: _attr(link, "IFLA_IFNAME", "") for link in ipr.get_links()}


def _name_number(name: str) -> tuple[str, int]:
    match = re.match(r"^(.*?)(\d+)$", name)
    if not match:
        return name, -1
    return match.group(1), int(match.group(2))


def primary_interface(ipr: Any, path: str | None) -> DefaultRoute:
    """The device of the IPv4 default route with the lowest priority (upstream's rule).

    Among equal priorities the first one wins, unless a later one shares its name prefix
    with a lower number (``eth1`` loses to ``eth0``).
    """
    names = link_names(ipr)
    candidates: list[DefaultRoute] = []
    for route in ipr.get_routes(family=socket.AF_INET, table=RT_TABLE_MAIN):
        if route["dst_len"] != 0 or route["type"] != RTN_UNICAST:
            continue
        oif = _attr(route, "RTA_OIF", 0)
        if not oif:
            multipath = route.get_attr("RTA_MULTIPATH")
            oif = multipath[0]["oif"] if multipath else 0
        if not oif:
            continue
        candidates.append(
            DefaultRoute(
                ifname=names.get(oif, ""),
                index=oif,
                gateway=_attr(route, "RTA_GATEWAY", ""),
                priority=_attr(route, "RTA_PRIORITY", 0),
            )
        )
    if not candidates:
        raise PodNetworkError(f"no IPv4 default route in {where(path)}")
    lowest = min(c.priority for c in candidates)
    best: DefaultRoute | None = None
    for cand in (c for c in candidates if c.priority == lowest):
        if best is None:
            best = cand
            continue
        prefix, number = _name_number(cand.ifname)
        best_prefix, best_number = _name_number(best.ifname)
        if prefix == best_prefix and number < best_number:
            best = cand
    assert best is not None
    return best


def find_link(ipr: Any, ifname: str) -> Any | None:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        return None
    return ipr.get_links(found[0])[0]


def require_link(ipr: Any, ifname: str, path: str | None) -> Any:
    link = find_link(ipr, ifname)
    if link is None:
        raise PodNetworkError(f"interface {ifname} not found in {where(path)}")
    return link


def addresses(ipr: Any, index: int) -> list[IPv4Interface | IPv6Interface]:
    """All addresses of a link as interfaces (IPv4 first, in kernel order)."""
    out: list[IPv4Interface | IPv6Interface] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_addr(family=family, index=index):
            addr = _attr(msg, "IFA_ADDRESS") if family == socket.AF_INET6 else None
            addr = addr or _attr(msg, "IFA_LOCAL") or _attr(msg, "IFA_ADDRESS")
            out.append(ip_interface(f"{addr}/{msg['prefixlen']}"))
    return out


def read_routes(ipr: Any) -> tuple[Route, ...]:
    """IPv4 unicast routes of the main table with a protocol upstream understands.

    Sorted like upstream (destination address, prefix length, priority); the default route
    is written ``0.0.0.0/0``.
    """
    names = link_names(ipr)
    rows: list[tuple[bytes, int, int, Route]] = []
    for msg in ipr.get_routes(family=socket.AF_INET, table=RT_TABLE_MAIN):
        if msg["type"] != RTN_UNICAST or msg["proto"] not in PROTOCOL_NAMES:
            continue
        dst = _attr(msg, "RTA_DST", "0.0.0.0")
        dst_len = msg["dst_len"]
        oif = _attr(msg, "RTA_OIF", 0)
        route = Route(
            dst=f"{dst}/{dst_len}",
            gw=_attr(msg, "RTA_GATEWAY", ""),
            dev=names.get(oif, "") if oif else "",
            protocol=PROTOCOL_NAMES[msg["proto"]],
            scope=SCOPE_NAMES.get(msg["scope"], ""),
        )
        rows.append((ip_address(dst).packed, dst_len, _attr(msg, "RTA_PRIORITY", 0), route))
    rows.sort(key=lambda row: row[:3])
    return tuple(row[3] for row in rows)


def permanent_neighbors(ipr: Any, index: int, ifname: str) -> tuple[Neighbor, ...]:
    out: list[Neighbor] = []
    for msg in ipr.get_neighbours(family=socket.AF_INET, ifindex=index):
        if not msg["state"] & NUD_PERMANENT:
            continue
        out.append(
            Neighbor(
                ip=_attr(msg, "NDA_DST", ""),
                hw_addr=_attr(msg, "NDA_LLADDR", ""),
                dev=ifname,
                state="permanent",
            )
        )
    return tuple(out)


def vxlan_info(link: Any) -> tuple[int, str, int] | None:
    """(id, remote, port) of a VXLAN link, or ``None`` if it is not one."""
    info = link.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
        return None
    data = info.get_attr("IFLA_INFO_DATA")
    remote = data.get_attr("IFLA_VXLAN_GROUP") or data.get_attr("IFLA_VXLAN_GROUP6") or ""
    return data.get_attr("IFLA_VXLAN_ID"), remote, data.get_attr("IFLA_VXLAN_PORT")


def create_vxlan(
    ipr: Any, ifname: str, remote: IPv4Address | IPv6Address, vxlan_id: int, port: int
) -> int:
    """Create a VXLAN link (remote, id, dstport, nothing else); return its index."""
    group = "vxlan_group6" if remote.version == 6 else "vxlan_group"
    kwargs = {group: str(remote)}
    try:
        ipr.link("add", ifname=ifname, kind="vxlan", vxlan_id=vxlan_id, vxlan_port=port, **kwargs)
    except NetlinkError as exc:
        raise PodNetworkError(
            f"cannot create vxlan {ifname} (id {vxlan_id}, remote {remote}, port {port}):"
            f" {exc.args[-1] if exc.args else exc}"
        ) from None
    return int(ipr.link_lookup(ifname=ifname)[0])


def move_link(ipr: Any, index: int, target_path: str) -> None:
    fd = os.open(target_path, os.O_RDONLY)
    try:
        ipr.link("set", index=index, net_ns_fd=fd)
    finally:
        os.close(fd)


def delete_link(ipr: Any, ifname: str) -> bool:
    """Delete ``ifname`` if present; True if something was deleted."""
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        return False
    try:
        ipr.link("del", index=found[0])
    except NetlinkError as exc:
        if exc.code == 19:  # ENODEV: gone meanwhile
            return False
        raise
    return True
