"""Turning libvirt's interface address reports into the instance's IP list (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from providers.base import IPAddress


def parse_interface_addresses(report: Mapping[str, Any] | None) -> tuple[IPAddress, ...]:
    """IPs from ``virDomainInterfaceAddresses``: IPv4 first, no loopback or link-local.

    ``report`` maps interface names to ``{"hwaddr": ..., "addrs": [{"addr": ...}, ...]}``.
    """
    found: list[IPAddress] = []
    for iface in (report or {}).values():
        for entry in (iface or {}).get("addrs") or ():
            try:
                ip = ipaddress.ip_address(str(entry.get("addr", "")).split("%", 1)[0])
            except ValueError:
                continue
            if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip in found:
                continue
            found.append(ip)
    return tuple(sorted(found, key=lambda ip: (ip.version, int(ip))))
