"""Blocking netlink helpers (pyroute2) for the pod VM side; callers run them in a thread."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface
from typing import Any

from podnetwork.errors import PodNetworkError
from podnetwork.netns import NetnsError, iproute

RT_TABLE_MAIN = 254
RTN_UNICAST = 1
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


def where(path: str | None) -> str:
    return f"network namespace {path}" if path else "the VM's network namespace"


@contextmanager
def open_netns(path: str | None) -> Iterator[Any]:
    """A netlink socket in the namespace at ``path`` (``None``: this process's). Never creates."""
    try:
        ipr: Any = iproute(path)
    except NetnsError as exc:
        raise PodNetworkError(str(exc)) from None
    try:
        yield ipr
    finally:
        ipr.close()


def _name_number(name: str) -> tuple[str, int]:
    match = re.match(r"^(.*?)(\d+)$", name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


def primary_interface(ipr: Any) -> str | None:
    """Device of the IPv4 default route with the lowest priority (upstream's rule), if any."""
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    candidates: list[tuple[int, str]] = []
    for route in ipr.get_routes(family=socket.AF_INET, table=RT_TABLE_MAIN):
        if route["dst_len"] != 0 or route["type"] != RTN_UNICAST:
            continue
        oif = route.get_attr("RTA_OIF")
        if oif in names:
            candidates.append((route.get_attr("RTA_PRIORITY") or 0, names[oif]))
    if not candidates:
        return None
    lowest = min(priority for priority, _ in candidates)
    best: str | None = None
    for priority, name in candidates:
        if priority != lowest:
            continue
        if best is None:
            best = name
            continue
        prefix, number = _name_number(name)
        best_prefix, best_number = _name_number(best)
        if prefix == best_prefix and number < best_number:
            best = name
    return best


def first_address(ipr: Any, ifname: str) -> IPv4Address | IPv6Address | None:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        return None
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_addr(family=family, index=found[0]):
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if addr:
                return ip_address(addr)
    return None


def find_index(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def is_vxlan(ipr: Any, index: int) -> bool:
    link = ipr.get_links(index)[0]
    info = link.get_attr("IFLA_LINKINFO")
    return info is not None and info.get_attr("IFLA_INFO_KIND") == "vxlan"


def move_link(ipr: Any, index: int, target_path: str) -> None:
    fd = os.open(target_path, os.O_RDONLY)
    try:
        ipr.link("set", index=index, net_ns_fd=fd)
    finally:
        os.close(fd)


def route_args(dst: str, gw: str, oif: int, protocol: str, scope: str) -> dict[str, Any]:
    """pyroute2 keyword arguments for one apf.json route."""
    args: dict[str, Any] = {"oif": oif}
    if dst:
        net = ip_interface(dst).network
        args["dst"] = str(net.network_address)
        args["dst_len"] = net.prefixlen
        args["family"] = socket.AF_INET6 if net.version == 6 else socket.AF_INET
    else:
        args["dst"] = "0.0.0.0"
        args["dst_len"] = 0
        args["family"] = socket.AF_INET
    if gw:
        args["gateway"] = gw
        args["family"] = socket.AF_INET6 if ip_address(gw).version == 6 else socket.AF_INET
    args["proto"] = PROTOCOL_NUMBERS[protocol]
    args["scope"] = SCOPE_NUMBERS[scope]
    return args
