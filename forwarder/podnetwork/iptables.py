"""The tunnel's iptables NOTRACK rules (:mod:`protocols.notrack`), failing with
:class:`PodNetworkError`."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from forwarder.podnetwork.errors import PodNetworkError
from protocols import notrack
from protocols.netcmd import CommandError


def add_notrack(
    peer: IPv4Address | IPv6Address, port: int, vxlan_id: int, *, netns: str | None = None
) -> None:
    try:
        notrack.add_notrack(peer, port, vxlan_id, netns=netns)
    except CommandError as exc:
        raise PodNetworkError(str(exc)) from None


def remove_notrack(vxlan_id: int, *, netns: str | None = None) -> None:
    try:
        notrack.remove_notrack(vxlan_id, netns=netns)
    except CommandError as exc:
        raise PodNetworkError(str(exc)) from None
