"""Turning libvirt's interface address reports into the instance's IP list (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from providers.base import IPAddress


def parse_interface_addresses(
    report: Mapping[str, Any] | None, macs: Sequence[str] = ()
) -> tuple[IPAddress, ...]:
    """IPs from ``virDomainInterfaceAddresses``: IPv4 first, no loopback or link-local.

    ``report`` maps interface names to ``{"hwaddr": ..., "addrs": [{"addr": ...}, ...]}``.
    With ``macs`` (the domain's interfaces in device order), the first interface's
    addresses come before the second's within each IP version: the tunnel goes to the
    first address, which must be the first NIC's when a second one is moved away.
    """
    order = {mac.lower(): index for index, mac in enumerate(macs)}
    found: dict[IPAddress, int] = {}
    for iface in (report or {}).values():
        position = order.get(str((iface or {}).get("hwaddr", "")).lower(), len(order))
        for entry in (iface or {}).get("addrs") or ():
            try:
                ip = ipaddress.ip_address(str(entry.get("addr", "")).split("%", 1)[0])
            except ValueError:
                continue
            if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip in found:
                continue
            found[ip] = position
    return tuple(sorted(found, key=lambda ip: (ip.version, found[ip], int(ip))))
