"""Pure builders of the libvirt provider: settings, domain XML, volumes, metadata, caps."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from providers.base import ConfigError, InvalidSpec
from providers.libvirt import Settings, capabilities, metadata
from providers.libvirt.config import validate, validate_cpuset
from providers.libvirt.domain import DomainConfig, LaunchSecurity, build_domain_xml, disk_paths
from providers.libvirt.volume import GIB, VolumeNames, overlay_xml, root_capacity, volume_format
from runtime.settings import parse_settings

META = metadata.InstanceMetadata(
    tags={"peerpods-node": "n1", "peerpods-sandbox": "abc"},
    created_at=datetime(2025, 5, 1, 12, 0, tzinfo=UTC),
)


def config(**changes: object) -> DomainConfig:
    values: dict[str, object] = {
        "name": "podvm-web-12345678",
        "arch": "x86_64",
        "domain_type": "kvm",
        "vcpus": 2,
        "memory_mib": 8192,
        "network": "default",
        "boot_disk": "/pool/podvm-web-12345678-root.qcow2",
        "cidata_disk": "/pool/podvm-web-12345678-cloudinit.iso",
        "meta": META,
    }
    values.update(changes)
    return DomainConfig(**values)  # type: ignore[arg-type]


def test_settings_defaults_are_upstreams() -> None:
    s = parse_settings(Settings, [], {})
    assert s.uri == "qemu+ssh://root@192.168.122.1/system?no_verify=1"
    assert (s.pool_name, s.network_name, s.vol_name) == ("default", "default", "podvm-base.qcow2")
    assert s.firmware == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    assert (s.cpu, s.memory, s.root_disk_size) == (2, 8192, 10)
    assert s.disable_cvm is True and s.launch_security == "" and s.cpuset == ""
    assert s.domain_type == "auto" and s.ip_timeout == timedelta(seconds=60)


def test_settings_from_env_and_flags() -> None:
    env = {
        "LIBVIRT_URI": "qemu:///system", "LIBVIRT_POOL": "p", "LIBVIRT_NET": "n",
        "LIBVIRT_VOL_NAME": "v.qcow2", "LIBVIRT_CPU": "4", "LIBVIRT_MEMORY": "1024",
        "LIBVIRT_CPUSET": "0-3,8", "LIBVIRT_ROOT_DISK_SIZE": "20", "DISABLECVM": "false",
        "LIBVIRT_LAUNCH_SECURITY": "s390-pv", "LIBVIRT_EFI_FIRMWARE": "/fw.fd",
        "LIBVIRT_DOMAIN_TYPE": "qemu", "LIBVIRT_IP_TIMEOUT": "2m",
    }
    s = parse_settings(Settings, ["-cpu", "6", "-data-dir", "/opt/data-dir"], env)
    assert (s.uri, s.pool_name, s.network_name, s.vol_name) == (
        "qemu:///system", "p", "n", "v.qcow2"
    )
    assert (s.cpu, s.memory, s.cpuset, s.root_disk_size) == (6, 1024, "0-3,8", 20)
    assert s.disable_cvm is False and s.launch_security == "s390-pv"
    assert (s.firmware, s.domain_type, s.data_dir) == ("/fw.fd", "qemu", "/opt/data-dir")
    assert s.ip_timeout == timedelta(minutes=2)


@pytest.mark.parametrize("cpuset", ["", "0", "0-3", "0,2,4,6", "0-3,8,10-12"])
def test_valid_cpusets(cpuset: str) -> None:
    validate_cpuset(cpuset)


@pytest.mark.parametrize("cpuset", ["ABC", "0-", "-3", "0,a,2", "0,,1", "1\n"])
def test_invalid_cpusets(cpuset: str) -> None:
    with pytest.raises(ConfigError, match="invalid CPUSet format"):
        validate_cpuset(cpuset)


def test_validate_rejects_empty_names() -> None:
    with pytest.raises(ConfigError, match="LIBVIRT_POOL is empty"):
        validate(Settings(pool_name=""))


def test_package_import_does_not_load_libvirt() -> None:
    code = (
        "import sys, providers.libvirt as p; "
        "assert callable(p.make_provider) and p.Settings; "
        "assert 'libvirt' not in sys.modules and 'pycdlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_x86_64_domain_with_firmware() -> None:
    root = ET.fromstring(build_domain_xml(config(cpuset="0-3", firmware="/fw/OVMF_CODE_4M.fd")))
    assert root.get("type") == "kvm"
    assert root.findtext("name") == "podvm-web-12345678"
    assert root.findtext("description") == "This Virtual Machine is the peer-pod VM"
    memory = root.find("memory")
    assert memory is not None and memory.text == "8192" and memory.get("unit") == "MiB"
    assert memory.get("dumpCore") == "on"
    assert root.findtext("vcpu") == "2" and root.find("vcpu").get("cpuset") == "0-3"  # type: ignore[union-attr]
    assert root.find("os/type").get("arch") == "x86_64"  # type: ignore[union-attr]
    loader = root.find("os/loader")
    assert loader is not None and loader.text == "/fw/OVMF_CODE_4M.fd"
    assert (loader.get("readonly"), loader.get("type")) == ("yes", "pflash")
    assert [f.tag for f in root.find("features")] == ["acpi", "apic", "vmport"]  # type: ignore[union-attr]
    assert root.find("features/vmport").get("state") == "off"  # type: ignore[union-attr]
    assert root.find("cpu").get("mode") == "host-model"  # type: ignore[union-attr]
    assert root.findtext("on_reboot") == "restart"
    disk, cdrom = root.findall("devices/disk")
    assert disk.find("target").attrib == {"dev": "sda", "bus": "sata"}  # type: ignore[union-attr]
    assert disk.find("boot").get("order") == "1"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert cdrom.get("device") == "cdrom" and cdrom.find("readonly") is not None
    assert cdrom.find("target").attrib == {"dev": "sdb", "bus": "sata"}  # type: ignore[union-attr]
    assert cdrom.find("address").get("unit") == "1"  # type: ignore[union-attr]
    iface = root.find("devices/interface")
    assert iface is not None and iface.get("type") == "network"
    assert iface.find("source").get("network") == "default"  # type: ignore[union-attr]
    assert iface.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    assert root.find("devices/console/target").get("type") == "serial"  # type: ignore[union-attr]
    assert metadata.from_domain(root) == META
    assert disk_paths(ET.tostring(root, encoding="unicode")) == [
        "/pool/podvm-web-12345678-root.qcow2", "/pool/podvm-web-12345678-cloudinit.iso",
    ]


def test_x86_64_domain_without_firmware_under_emulation() -> None:
    root = ET.fromstring(build_domain_xml(config(domain_type="qemu")))
    assert root.get("type") == "qemu"
    assert root.find("os/loader") is None
    assert root.find("cpu") is None  # host-model needs KVM
    assert root.find("vcpu").get("cpuset") is None  # type: ignore[union-attr]
    cdrom = root.findall("devices/disk")[1]
    assert cdrom.find("target").attrib == {"dev": "hda", "bus": "ide"}  # type: ignore[union-attr]


def test_x86_64_refuses_launch_security() -> None:
    with pytest.raises(InvalidSpec, match="launch Security type is not supported"):
        build_domain_xml(config(launch_security=LaunchSecurity.S390_PV))


def test_s390x_domain() -> None:
    root = ET.fromstring(build_domain_xml(config(
        arch="s390x", machine="s390-ccw-virtio-rhel9.0.0", emulator="/usr/bin/qemu-kvm",
        launch_security=LaunchSecurity.S390_PV,
    )))
    os_type = root.find("os/type")
    assert os_type is not None and os_type.get("machine") == "s390-ccw-virtio-rhel9.0.0"
    assert root.findtext("devices/emulator") == "/usr/bin/qemu-kvm"
    assert root.findtext("currentMemory") == "8192"
    disks = root.findall("devices/disk")
    assert [d.find("target").get("dev") for d in disks] == ["vda", "vdb"]  # type: ignore[union-attr]
    assert all(d.find("driver").get("iommu") == "on" for d in disks)  # type: ignore[union-attr]
    assert root.find("devices/interface/driver").get("iommu") == "on"  # type: ignore[union-attr]
    assert root.find("devices/console/target").get("type") == "sclp"  # type: ignore[union-attr]
    assert root.find("devices/rng/backend").text == "/dev/urandom"  # type: ignore[union-attr]


def test_aarch64_domain() -> None:
    root = ET.fromstring(build_domain_xml(config(arch="aarch64", machine="virt-7.2")))
    assert root.find("os").get("firmware") == "efi"  # type: ignore[union-attr]
    assert root.find("os/type").get("machine") == "virt-7.2"  # type: ignore[union-attr]
    assert root.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]
    cdrom = root.findall("devices/disk")[1]
    assert cdrom.find("target").attrib == {"dev": "sda", "bus": "scsi"}  # type: ignore[union-attr]
    assert root.find("devices/controller").get("model") == "virtio-scsi"  # type: ignore[union-attr]


def test_zero_sizes_are_invalid() -> None:
    with pytest.raises(InvalidSpec):
        build_domain_xml(config(vcpus=0))


CAPS = """<capabilities><host><cpu><arch>x86_64</arch></cpu></host>
<guest><os_type>hvm</os_type>
  <arch name='x86_64'><emulator>/usr/bin/qemu-system-x86_64</emulator>
    <machine canonical='pc-i440fx-7.2'>pc</machine><machine>pc-q35-7.2</machine>
    <domain type='qemu'/>
    <domain type='kvm'><machine canonical='pc-q35-7.2'>q35</machine></domain>
  </arch></guest>
<guest><os_type>hvm</os_type>
  <arch name='aarch64'><emulator>/usr/bin/qemu-system-aarch64</emulator>
    <machine canonical='virt-7.2'>virt</machine><domain type='qemu'/></arch></guest>
</capabilities>"""


def test_capabilities() -> None:
    caps = capabilities.parse_capabilities(CAPS)
    assert caps.supports("x86_64", "kvm") and caps.supports("x86_64", "qemu")
    assert not caps.supports("aarch64", "kvm") and not caps.supports("s390x", "qemu")
    assert caps.canonical_machine("x86_64", "pc") == "pc-i440fx-7.2"
    assert caps.canonical_machine("x86_64", "q35") == "pc-q35-7.2"
    assert caps.canonical_machine("x86_64", "pc-q35-7.2") == "pc-q35-7.2"
    assert caps.canonical_machine("aarch64", "virt") == "virt-7.2"
    assert caps.canonical_machine("s390x", "s390-ccw-virtio") == ""
    guest = caps.guest("aarch64")
    assert guest is not None and guest.emulator == "/usr/bin/qemu-system-aarch64"
    assert [capabilities.normalize_arch(m) for m in ("x86_64", "i686", "aarch64", "s390x")] == [
        "x86_64", "x86_64", "aarch64", "s390x",
    ]


def test_volumes() -> None:
    assert VolumeNames.for_instance("vm") == VolumeNames("vm-root.qcow2", "vm-cloudinit.iso")
    assert root_capacity(10, 3 * GIB) == 10 * GIB
    assert root_capacity(1, 3 * GIB) == 3 * GIB
    volume = ET.fromstring(overlay_xml("vm-root.qcow2", 5 * GIB, "/pool/base.qcow2", "qcow2"))
    assert volume.findtext("name") == "vm-root.qcow2"
    assert volume.findtext("capacity") == str(5 * GIB)
    assert volume.find("target/format").get("type") == "qcow2"  # type: ignore[union-attr]
    assert volume.findtext("backingStore/path") == "/pool/base.qcow2"
    assert volume_format("<volume><target><format type='raw'/></target></volume>") == "raw"
    assert volume_format("<volume><target/></volume>") == "raw"


def test_metadata_round_trip_and_foreign_domains() -> None:
    domain = ET.Element("domain")
    ET.SubElement(domain, "metadata").append(metadata.to_element(META))
    parsed = metadata.from_domain_xml(ET.tostring(domain, encoding="unicode"))
    assert parsed == META and parsed.sandbox_id == "abc"
    assert parsed.matches({"peerpods-node": "n1"}) and not parsed.matches({"peerpods-node": "x"})
    foreign = "<domain><metadata><other xmlns='urn:x'/></metadata></domain>"
    assert metadata.from_domain_xml(foreign) is None
    assert metadata.from_domain_xml("<domain/>") is None
