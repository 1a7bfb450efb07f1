"""Plain values describing what one end of the tunnel creates, shared by both ends.

An end's plan (``adaptor.network.plan``, ``forwarder.podnetwork.plan``) is computed from the
``pod-network`` of apf.json and a few observed facts, without touching the system; its
apply module turns the plan into :class:`~podnetwork.steps.Step` s.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class NotrackRules:
    """Upstream's two NOTRACK rules for the VXLAN traffic with ``peer``, in ``netns``."""

    netns: str | None
    peer: IPAddress
    port: int
    vxlan_id: int


@dataclass(frozen=True, slots=True)
class VxlanDevice:
    """A VXLAN device created in ``netns`` as ``name`` (so its UDP socket lives there), then
    moved into ``target_netns`` and renamed ``target_name`` there."""

    netns: str | None
    name: str
    vxlan_id: int
    port: int
    remote: IPAddress
    target_netns: str
    target_name: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """tc: everything arriving on ``src`` leaves through ``dst`` (in ``netns``)."""

    netns: str
    src: str
    dst: str
