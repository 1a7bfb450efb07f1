"""Settings of the libvirt provider, under upstream's env var names, flags and defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from providers.base import ConfigError
from runtime.settings import setting

DEFAULT_URI = "qemu+ssh://root@192.168.122.1/system?no_verify=1"
DEFAULT_FIRMWARE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
DOMAIN_TYPES = ("auto", "kvm", "qemu")
LAUNCH_SECURITY_S390_PV = "s390-pv"

_CPUSET = re.compile(r"(\d+(-\d+)?)(,\d+(-\d+)?)*")


@dataclass(frozen=True)
class Settings:
    TITLE = "libvirt provider"

    uri: str = setting(env="LIBVIRT_URI", flag="-uri", default=DEFAULT_URI, help="libvirt URI")
    pool_name: str = setting(
        env="LIBVIRT_POOL", flag="-pool-name", default="default", help="libvirt storage pool"
    )
    network_name: str = setting(
        env="LIBVIRT_NET", flag="-network-name", default="default", help="libvirt network"
    )
    vol_name: str = setting(
        env="LIBVIRT_VOL_NAME",
        flag="-vol-name",
        default="podvm-base.qcow2",
        help="libvirt volume holding the pod VM base image",
    )
    launch_security: str = setting(
        env="LIBVIRT_LAUNCH_SECURITY",
        flag="-launch-security",
        default="",
        help="launch security for confidential VMs: s390-pv; empty = determine from the host",
    )
    firmware: str = setting(
        env="LIBVIRT_EFI_FIRMWARE",
        flag="-firmware",
        default=DEFAULT_FIRMWARE,
        help="path of the OVMF firmware (x86_64); empty boots with the BIOS",
    )
    cpu: int = setting(
        env="LIBVIRT_CPU", flag="-cpu", default=2, help="number of vCPUs when the pod asks none"
    )
    memory: int = setting(
        env="LIBVIRT_MEMORY",
        flag="-memory",
        default=8192,
        help="memory in MiB when the pod asks none",
    )
    cpuset: str = setting(
        env="LIBVIRT_CPUSET",
        flag="-cpuset",
        default="",
        help='host CPUs to pin vCPUs to, e.g. "0,2,4,6" or "0-3,8"',
    )
    root_disk_size: int = setting(
        env="LIBVIRT_ROOT_DISK_SIZE",
        flag="-root-disk-size",
        default=10,
        help="root disk size in GiB (never below the base image's size)",
    )
    disable_cvm: bool = setting(
        env="DISABLECVM", flag="-disable-cvm", default=True, help="use non-confidential VMs"
    )
    data_dir: str = setting(
        flag="-data-dir", default="/var/lib/libvirt/images", help="libvirt storage dir (unused)"
    )
    domain_type: str = setting(
        env="LIBVIRT_DOMAIN_TYPE",
        flag="-domain-type",
        default="auto",
        help="hypervisor of the pod VMs: kvm, qemu (emulation) or auto (kvm when the host has it)",
    )
    ip_timeout: timedelta = setting(
        env="LIBVIRT_IP_TIMEOUT",
        flag="-ip-timeout",
        default=timedelta(seconds=60),
        help="how long a new pod VM may take to get an IP address",
    )


def validate_cpuset(cpuset: str) -> None:
    """Raise :class:`ConfigError` unless ``cpuset`` is empty or like ``0-3,8``."""
    if cpuset and not _CPUSET.fullmatch(cpuset):
        raise ConfigError(
            f"invalid CPUSet format: {cpuset} (expected format: comma-separated CPU numbers "
            "or ranges, e.g., '0,2,4,6' or '0-3')"
        )


def validate(settings: Settings) -> None:
    """Checks that need no connection: sizes, cpuset, the domain type."""
    if not settings.uri:
        raise ConfigError("LIBVIRT_URI is empty")
    for name, value in (
        ("LIBVIRT_POOL", settings.pool_name),
        ("LIBVIRT_NET", settings.network_name),
        ("LIBVIRT_VOL_NAME", settings.vol_name),
    ):
        if not value:
            raise ConfigError(f"{name} is empty")
    if settings.cpu <= 0:
        raise ConfigError("LIBVIRT_CPU must be greater than zero")
    if settings.memory <= 0:
        raise ConfigError("LIBVIRT_MEMORY must be greater than zero")
    if settings.root_disk_size < 0:
        raise ConfigError("LIBVIRT_ROOT_DISK_SIZE must not be negative")
    if settings.domain_type not in DOMAIN_TYPES:
        raise ConfigError(
            f"LIBVIRT_DOMAIN_TYPE must be one of {', '.join(DOMAIN_TYPES)}, "
            f"not {settings.domain_type!r}"
        )
    validate_cpuset(settings.cpuset)
