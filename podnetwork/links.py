"""Blocking netlink helpers (pyroute2) both ends of the tunnel share; callers run them in a
worker thread. Reading links, addresses and the default route, and creating, moving and
deleting VXLAN devices. Errors from pyroute2 (``NetlinkError``, ``OSError``) pass through:
each end translates them into :class:`~podnetwork.errors.PodNetworkError` with its own text.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_interface
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from podnetwork.errors import PodNetworkError
from podnetwork.netns import NetnsError, iproute

RT_TABLE_MAIN = 254
RTN_UNICAST = 1
ENODEV = 19


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


def where(path: str | None, home: str) -> str:
    """``network namespace <path>``, or ``home`` (how this end names its own namespace)."""
    return f"network namespace {path}" if path else home


def attr(msg: Any, name: str, default: Any = None) -> Any:
    value = msg.get_attr(name)
    return default if value is None else value


def link_names(ipr: Any) -> dict[int, str]:
    return {link["index"]: attr(link, "IFLA_IFNAME", "") for link in ipr.get_links()}


@dataclass(frozen=True, slots=True)
class DefaultRoute:
    ifname: str
    index: int
    gateway: str
    priority: int
    proto: int = 0


def default_routes(
    ipr: Any, *, multipath: bool = True, family: int = socket.AF_INET
) -> list[DefaultRoute]:
    """The unicast default routes of the main table that name an output device (IPv4
    unless ``family`` is ``AF_INET6``).

    With ``multipath``, a multipath route counts with its first next hop's device.
    """
    names = link_names(ipr)
    found: list[DefaultRoute] = []
    for route in ipr.get_routes(family=family, table=RT_TABLE_MAIN):
        if route["dst_len"] != 0 or route["type"] != RTN_UNICAST:
            continue
        oif = attr(route, "RTA_OIF", 0)
        if not oif and multipath:
            hops = route.get_attr("RTA_MULTIPATH")
            oif = hops[0]["oif"] if hops else 0
        if not oif:
            continue
        found.append(
            DefaultRoute(
                ifname=names.get(oif, ""),
                index=oif,
                gateway=attr(route, "RTA_GATEWAY", ""),
                priority=attr(route, "RTA_PRIORITY", 0),
                proto=route["proto"],
            )
        )
    return found


def _name_number(name: str) -> tuple[str, int]:
    match = re.match(r"^(.*?)(\d+)$", name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


def pick_primary(candidates: list[DefaultRoute]) -> DefaultRoute | None:
    """The default route with the lowest priority (upstream's rule), if any.

    Among equal priorities the first one wins, unless a later one shares its name prefix
    with a lower number (``eth1`` loses to ``eth0``).
    """
    if not candidates:
        return None
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
    return best


def find_link(ipr: Any, ifname: str) -> Any | None:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        return None
    return ipr.get_links(found[0])[0]


def find_index(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def addresses(ipr: Any, index: int) -> list[IPv4Interface | IPv6Interface]:
    """All addresses of a link as interfaces (IPv4 first, in kernel order)."""
    out: list[IPv4Interface | IPv6Interface] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_addr(family=family, index=index):
            addr = attr(msg, "IFA_ADDRESS") if family == socket.AF_INET6 else None
            addr = addr or attr(msg, "IFA_LOCAL") or attr(msg, "IFA_ADDRESS")
            out.append(ip_interface(f"{addr}/{msg['prefixlen']}"))
    return out


def vxlan_info(link: Any) -> tuple[int, str, int] | None:
    """(id, remote, port) of a VXLAN link, or ``None`` if it is not one."""
    info = link.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
        return None
    data = info.get_attr("IFLA_INFO_DATA")
    remote = data.get_attr("IFLA_VXLAN_GROUP") or data.get_attr("IFLA_VXLAN_GROUP6") or ""
    return data.get_attr("IFLA_VXLAN_ID"), remote, data.get_attr("IFLA_VXLAN_PORT")


def is_vxlan(ipr: Any, index: int) -> bool:
    return vxlan_info(ipr.get_links(index)[0]) is not None


def create_vxlan(
    ipr: Any, ifname: str, remote: IPv4Address | IPv6Address, vxlan_id: int, port: int
) -> int:
    """Create a VXLAN link (remote, id, dstport, nothing else); return its index.

    A failure is pyroute2's ``NetlinkError``.
    """
    group = "vxlan_group6" if remote.version == 6 else "vxlan_group"
    kwargs = {group: str(remote)}
    ipr.link("add", ifname=ifname, kind="vxlan", vxlan_id=vxlan_id, vxlan_port=port, **kwargs)
    return int(ipr.link_lookup(ifname=ifname)[0])


def move_link(ipr: Any, index: int, target_path: str) -> None:
    """Move link ``index`` into the namespace at ``target_path`` (keeping its name)."""
    fd = os.open(target_path, os.O_RDONLY)
    try:
        ipr.link("set", index=index, net_ns_fd=fd)
    finally:
        os.close(fd)


def delete_index(ipr: Any, index: int) -> bool:
    """Delete link ``index``; False when it was already gone."""
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code == ENODEV:  # gone meanwhile
            return False
        raise
    return True


def delete_link(ipr: Any, ifname: str) -> bool:
    """Delete ``ifname`` if present; True if something was deleted."""
    index = find_index(ipr, ifname)
    return index is not None and delete_index(ipr, index)
