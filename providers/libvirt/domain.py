"""Domain XML for a pod VM, per host architecture, as upstream builds it (pure)."""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from providers.base import InvalidSpec
from providers.libvirt import datadisks, metadata
from providers.libvirt.capabilities import ARCH_AARCH64, ARCH_S390X, ARCH_X86_64, OS_TYPE_HVM

DESCRIPTION = "This Virtual Machine is the peer-pod VM"


class LaunchSecurity(enum.Enum):
    NONE = "None"
    S390_PV = "S390PV"


@dataclass(frozen=True, slots=True)
class DomainConfig:
    name: str
    arch: str
    domain_type: str  # "kvm" or "qemu"
    vcpus: int
    memory_mib: int
    network: str
    boot_disk: str  # path of the root volume
    cidata_disk: str  # path of the cloud-init ISO volume
    meta: metadata.InstanceMetadata
    firmware: str = ""
    cpuset: str = ""
    machine: str = ""  # canonical machine type (aarch64, s390x)
    emulator: str = ""  # emulator binary from the host capabilities (aarch64, s390x)
    launch_security: LaunchSecurity = LaunchSecurity.NONE
    data_disks: tuple[datadisks.DataDisk, ...] = ()  # the pod's volumes, LUN order
    # 2: a second NIC on the same network, for EXTERNAL_NETWORK_VIA_PODVM (the pod VM's
    # forwarder moves it into the pod netns); the first one stays the tunnel's.
    nics: int = 1


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def _common_head(cfg: DomainConfig) -> ET.Element:
    domain = ET.Element("domain", {"type": cfg.domain_type})
    _sub(domain, "name", cfg.name)
    _sub(domain, "description", DESCRIPTION)
    _sub(domain, "metadata").append(metadata.to_element(cfg.meta))
    return domain


def _vcpu(domain: ET.Element, cfg: DomainConfig) -> None:
    attrs = {"cpuset": cfg.cpuset} if cfg.cpuset else {}
    _sub(domain, "vcpu", str(cfg.vcpus), **attrs)


def _cpu(domain: ET.Element, cfg: DomainConfig, mode: str) -> None:
    # host-model and host-passthrough need hardware virtualization; under emulation
    # (type='qemu') the hypervisor's default CPU model is used.
    if cfg.domain_type == "kvm":
        _sub(domain, "cpu", mode=mode)


def _file_disk(
    devices: ET.Element,
    *,
    device: str,
    path: str,
    fmt: str,
    dev: str,
    bus: str,
    iommu: bool = False,
    boot: bool = False,
    readonly: bool = False,
    drive_unit: int | None = None,
) -> None:
    disk = _sub(devices, "disk", type="file", device=device)
    driver = {"name": "qemu", "type": fmt}
    if iommu:
        driver["iommu"] = "on"
    _sub(disk, "driver", **driver)
    _sub(disk, "source", file=path)
    _sub(disk, "target", dev=dev, bus=bus)
    if boot:
        _sub(disk, "boot", order="1")
    if readonly:
        _sub(disk, "readonly")
    if drive_unit is not None:
        _sub(
            disk, "address", type="drive", controller="0", bus="0", target="0",
            unit=str(drive_unit),
        )


def _interface(devices: ET.Element, cfg: DomainConfig, *, iommu: bool) -> None:
    for _ in range(cfg.nics):
        interface = _sub(devices, "interface", type="network")
        _sub(interface, "source", network=cfg.network)
        _sub(interface, "model", type="virtio")
        if iommu:
            _sub(interface, "driver", iommu="on")


def interface_macs(domain_xml: str) -> tuple[str, ...]:
    """The MAC addresses of the domain's interfaces, in device order (lowercase)."""
    root = ET.fromstring(domain_xml)
    return tuple(
        mac.get("address", "").lower()
        for mac in root.findall("./devices/interface/mac")
    )


def _console(devices: ET.Element, target: str) -> None:
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type=target)


def _memballoon(devices: ET.Element) -> None:
    balloon = _sub(devices, "memballoon", model="virtio")
    _sub(balloon, "driver", iommu="on")


def _x86_64(cfg: DomainConfig) -> ET.Element:
    if cfg.launch_security is not LaunchSecurity.NONE:
        raise InvalidSpec(
            "launch Security type is not supported for this domain: "
            f"{cfg.launch_security.value}"
        )
    domain = _common_head(cfg)
    _sub(domain, "memory", str(cfg.memory_mib), unit="MiB", dumpCore="on")
    _vcpu(domain, cfg)
    os_element = _sub(domain, "os")
    _sub(os_element, "type", OS_TYPE_HVM, arch=ARCH_X86_64)
    if cfg.firmware:
        # An explicit read-only pflash loader; libvirt adds the per-domain NVRAM from the
        # firmware's variables template. (libvirt 9 refuses loader attributes together with
        # firmware='efi' autoselection, which upstream also sets.)
        _sub(os_element, "loader", cfg.firmware, readonly="yes", type="pflash")
    features = _sub(domain, "features")
    _sub(features, "acpi")  # without ACPI a guest's poweroff only halts it
    _sub(features, "apic")
    _sub(features, "vmport", state="off")
    _cpu(domain, cfg, "host-model")
    _sub(domain, "on_reboot", "restart")
    devices = _sub(domain, "devices")
    _file_disk(
        devices, device="disk", path=cfg.boot_disk, fmt="qcow2", dev="sda", bus="sata",
        boot=True, drive_unit=0,
    )
    if cfg.firmware:
        # images built for UEFI (mkosi) see the config drive on SATA, like upstream
        _file_disk(
            devices, device="cdrom", path=cfg.cidata_disk, fmt="raw", dev="sdb", bus="sata",
            readonly=True, drive_unit=1,
        )
    else:
        _file_disk(
            devices, device="cdrom", path=cfg.cidata_disk, fmt="raw", dev="hda", bus="ide",
            readonly=True, drive_unit=0,
        )
    _interface(devices, cfg, iommu=False)
    _console(devices, "serial")
    return domain


def _s390x(cfg: DomainConfig) -> ET.Element:
    domain = _common_head(cfg)
    os_element = _sub(domain, "os")
    type_attrs = {"arch": ARCH_S390X}
    if cfg.machine:
        type_attrs["machine"] = cfg.machine
    _sub(os_element, "type", OS_TYPE_HVM, **type_attrs)
    _sub(domain, "memory", str(cfg.memory_mib), unit="MiB")
    _sub(domain, "currentMemory", str(cfg.memory_mib), unit="MiB")
    _vcpu(domain, cfg)
    _cpu(domain, cfg, "host-model")
    _sub(domain, "clock", offset="utc")
    devices = _sub(domain, "devices")
    if cfg.emulator:
        _sub(devices, "emulator", cfg.emulator)
    _file_disk(
        devices, device="disk", path=cfg.boot_disk, fmt="qcow2", dev="vda", bus="virtio",
        iommu=True, boot=True,
    )
    _file_disk(
        devices, device="disk", path=cfg.cidata_disk, fmt="raw", dev="vdb", bus="virtio",
        iommu=True,
    )
    _interface(devices, cfg, iommu=True)
    _console(devices, "sclp")
    _memballoon(devices)
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    return domain


def _aarch64(cfg: DomainConfig) -> ET.Element:
    domain = _common_head(cfg)
    _sub(domain, "memory", str(cfg.memory_mib), unit="MiB")
    _vcpu(domain, cfg)
    os_element = _sub(domain, "os", firmware="efi")  # firmware autoselection
    type_attrs = {"arch": ARCH_AARCH64}
    if cfg.machine:
        type_attrs["machine"] = cfg.machine
    _sub(os_element, "type", OS_TYPE_HVM, **type_attrs)
    _sub(_sub(domain, "features"), "acpi")
    _cpu(domain, cfg, "host-passthrough")
    devices = _sub(domain, "devices")
    if cfg.emulator:
        _sub(devices, "emulator", cfg.emulator)
    _file_disk(
        devices, device="disk", path=cfg.boot_disk, fmt="qcow2", dev="vda", bus="virtio",
        iommu=True, boot=True,
    )
    _file_disk(
        devices, device="cdrom", path=cfg.cidata_disk, fmt="raw", dev="sda", bus="scsi",
        readonly=True,
    )
    _sub(devices, "controller", type="scsi", model="virtio-scsi")
    _interface(devices, cfg, iommu=True)
    _console(devices, "serial")
    _memballoon(devices)
    return domain


def build_domain_xml(cfg: DomainConfig) -> str:
    """The domain XML for ``cfg.arch`` (anything but aarch64 and s390x is built as x86_64)."""
    if cfg.vcpus <= 0 or cfg.memory_mib <= 0:
        raise InvalidSpec(f"vCPUs ({cfg.vcpus}) and memory ({cfg.memory_mib} MiB) must be > 0")
    if cfg.arch == ARCH_S390X:
        element = _s390x(cfg)
    elif cfg.arch == ARCH_AARCH64:
        element = _aarch64(cfg)
    else:
        element = _x86_64(cfg)
    if cfg.data_disks:
        datadisks.append(element, cfg.data_disks, iommu=cfg.arch in (ARCH_S390X, ARCH_AARCH64))
    ET.indent(element)
    return ET.tostring(element, encoding="unicode")


def disk_paths(domain_xml: str) -> list[str]:
    """Files behind the domain's own file-backed disks (root and config drive volumes; the
    pod's data disks are not the domain's)."""
    root = ET.fromstring(domain_xml)
    paths = []
    for disk in root.findall("devices/disk"):
        if datadisks.is_data_disk(disk):
            continue
        source = disk.find("source")
        path = source.get("file") if source is not None else None
        if path:
            paths.append(path)
    return paths
