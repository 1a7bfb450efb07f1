"""Blocking netlink reads of the pod VM end (pyroute2): is the VM's network up yet? The
helpers both ends share are in :mod:`podnetwork.links`; callers run these in a thread."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from podnetwork.links import default_routes, find_index, open_netns, pick_primary
from podnetwork.links import where as _where

__all__ = ["first_address", "open_netns", "primary_interface", "where"]


def where(path: str | None) -> str:
    return _where(path, "the VM's network namespace")


def primary_interface(ipr: Any) -> str | None:
    """Device of the IPv4 default route with the lowest priority (upstream's rule), if any."""
    named = [route for route in default_routes(ipr, multipath=False) if route.ifname]
    best = pick_primary(named)
    return best.ifname if best is not None else None


def first_address(ipr: Any, ifname: str) -> IPv4Address | IPv6Address | None:
    index = find_index(ipr, ifname)
    if index is None:
        return None
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_addr(family=family, index=index):
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if addr:
                return ip_address(addr)
    return None
