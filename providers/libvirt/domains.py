"""Blocking domain operations: lookup, define and start, addresses, removal, description.

Functions here run in worker threads and raise ``libvirtError``; the provider translates it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import libvirt

from providers.base import InstanceState, IPAddress
from providers.libvirt import metadata
from providers.libvirt.addresses import parse_interface_addresses
from providers.libvirt.connection import NOT_SUPPORTED_CODES, error_code, is_missing
from providers.libvirt.domain import disk_paths, interface_macs
from providers.libvirt.storage import delete_by_path

log = logging.getLogger(__name__)

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

# libvirt's words in the one state vocabulary of providers.base.
STATES = {
    "running": InstanceState.RUNNING,
    "blocked": InstanceState.RUNNING,
    "paused": InstanceState.STOPPED,
    "pmsuspended": InstanceState.STOPPED,
    "shutdown": InstanceState.STOPPING,
    "shutoff": InstanceState.STOPPED,
    "crashed": InstanceState.STOPPED,
    "nostate": InstanceState.UNKNOWN,
}

# Where a domain's addresses come from, in the order they are tried: the libvirt network's
# DHCP leases, then the guest agent, then the host's ARP table.
ADDRESS_SOURCES = (
    ("lease", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE),
    ("agent", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT),
    ("arp", getattr(libvirt, "VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP", 2)),
)


@dataclass(frozen=True, slots=True)
class DomainInfo:
    uuid: str
    name: str
    state: str
    meta: metadata.InstanceMetadata | None
    ips: tuple[IPAddress, ...] = ()
    created_at: datetime | None = None


def lookup_by_name(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if is_missing(exc, "domain"):
            return None
        raise


def lookup_by_uuid(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if is_missing(exc, "domain"):
            return None
        raise


def state_name(dom: libvirt.virDomain) -> str:
    state, _reason = dom.state(0)
    return STATE_NAMES.get(state, "unknown")


def define_and_start(conn: libvirt.virConnect, xml: str) -> str:
    """Define the domain and start it; return its UUID. A failed start leaves it defined."""
    dom = conn.defineXML(xml)
    dom.create()
    return str(dom.UUIDString())


def addresses(dom: libvirt.virDomain) -> tuple[IPAddress, ...]:
    """The domain's IPs from the first source that reports any (lease, agent, ARP), the
    first NIC's first."""
    macs = interface_macs(dom.XMLDesc(0))
    for label, source in ADDRESS_SOURCES:
        try:
            report = dom.interfaceAddresses(source, 0)
        except libvirt.libvirtError as exc:
            if is_missing(exc, "domain"):
                raise
            log.debug("instance=%s: no %s addresses: %s", dom.name(), label, exc)
            continue
        ips = parse_interface_addresses(report, macs)
        if ips:
            return ips
    return ()


def describe(dom: libvirt.virDomain, *, with_addresses: bool = True) -> DomainInfo:
    meta = metadata.from_domain_xml(dom.XMLDesc(0))
    state = state_name(dom)
    ips: tuple[IPAddress, ...] = ()
    if with_addresses and state == "running":
        ips = addresses(dom)
    return DomainInfo(
        uuid=str(dom.UUIDString()),
        name=str(dom.name()),
        state=state,
        meta=meta,
        ips=ips,
        created_at=meta.created_at if meta else None,
    )


def remove(conn: libvirt.virConnect, dom: libvirt.virDomain) -> None:
    """Stop the domain, delete its file-backed volumes, undefine it with its NVRAM.

    A domain or volume that disappears meanwhile is not an error.
    """
    name = dom.name()
    try:
        if dom.isActive():
            dom.destroy()
        paths = disk_paths(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    except libvirt.libvirtError as exc:
        if is_missing(exc, "domain"):
            return
        raise
    for path in paths:
        if delete_by_path(conn, path):
            log.debug("instance=%s: volume %s deleted", name, path)
    try:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError as exc:
        if is_missing(exc, "domain"):
            return
        if error_code(exc) not in NOT_SUPPORTED_CODES:
            raise
        log.debug("instance=%s: undefine with NVRAM unsupported, plain undefine", name)
        try:
            dom.undefine()
        except libvirt.libvirtError as inner:
            if not is_missing(inner, "domain"):
                raise
