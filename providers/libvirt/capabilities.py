"""The parts of libvirt's host capabilities XML the domain builder needs (pure parsing)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

ARCH_X86_64 = "x86_64"
ARCH_AARCH64 = "aarch64"
ARCH_S390X = "s390x"
OS_TYPE_HVM = "hvm"


@dataclass(frozen=True, slots=True)
class Machine:
    name: str
    canonical: str = ""


@dataclass(frozen=True, slots=True)
class Guest:
    os_type: str
    arch: str
    emulator: str = ""
    machines: tuple[Machine, ...] = ()
    domain_types: tuple[str, ...] = ()
    # machines listed under a specific <domain type=...>, by domain type
    domain_machines: tuple[tuple[str, tuple[Machine, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class HostCapabilities:
    guests: tuple[Guest, ...] = ()

    def guest(self, arch: str, os_type: str = OS_TYPE_HVM) -> Guest | None:
        for guest in self.guests:
            if guest.arch == arch and guest.os_type == os_type:
                return guest
        return None

    def supports(self, arch: str, domain_type: str) -> bool:
        guest = self.guest(arch)
        return guest is not None and domain_type in guest.domain_types

    def canonical_machine(self, arch: str, machine: str) -> str:
        """The canonical name of ``machine`` for ``arch`` (``virt`` -> ``virt-7.2``); ``""``."""
        guest = self.guest(arch)
        if guest is None:
            return ""
        groups = [guest.machines, *(machines for _, machines in guest.domain_machines)]
        for machines in groups:
            for candidate in machines:
                if candidate.name == machine:
                    return candidate.canonical or candidate.name
        return ""


def _machines(parent: ET.Element) -> tuple[Machine, ...]:
    return tuple(
        Machine(name=(m.text or "").strip(), canonical=m.get("canonical", ""))
        for m in parent.findall("machine")
        if (m.text or "").strip()
    )


def parse_capabilities(text: str) -> HostCapabilities:
    root = ET.fromstring(text)
    guests = []
    for guest in root.findall("guest"):
        arch = guest.find("arch")
        if arch is None:
            continue
        domains = arch.findall("domain")
        guests.append(
            Guest(
                os_type=(guest.findtext("os_type") or "").strip(),
                arch=arch.get("name", ""),
                emulator=(arch.findtext("emulator") or "").strip(),
                machines=_machines(arch),
                domain_types=tuple(d.get("type", "") for d in domains),
                domain_machines=tuple((d.get("type", ""), _machines(d)) for d in domains),
            )
        )
    return HostCapabilities(guests=tuple(guests))


def normalize_arch(model: str) -> str:
    """Map libvirt's node model (``virNodeGetInfo``) to the builder's three families."""
    if model == ARCH_S390X:
        return ARCH_S390X
    if model in (ARCH_AARCH64, "arm64"):
        return ARCH_AARCH64
    return ARCH_X86_64
