"""A real libvirtd (with virtlogd) inside a network namespace of its own, for the tests.

The daemons run in the namespace, so the NAT network they make (bridge, dnsmasq, iptables)
and every pod VM address stay inside it and never appear on the machine's own network. The
control socket is a file (``/run/libvirt/libvirt-sock``) and reachable from outside.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt

from providers.libvirt import metadata

URI = "qemu:///system"
IMAGE_ENV = "PEERPODS_LIBVIRT_TEST_IMAGE"
DEFAULT_IMAGE = "/var/cache/peerpods-test/podvm-test.qcow2"
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
POOL_DIR = Path("/var/lib/peerpods-test/pool")
POOL_NAME = "peerpods-test"
NETWORK_NAME = "peerpods-test"
BRIDGE = "pptbr0"
SUBNET_PREFIX = "192.168.150"
BASE_VOLUME = "podvm-test.qcow2"

NETWORK_XML = f"""
<network>
  <name>{NETWORK_NAME}</name>
  <forward mode='nat'/>
  <bridge name='{BRIDGE}' stp='off' delay='0'/>
  <ip address='{SUBNET_PREFIX}.1' netmask='255.255.255.0'>
    <dhcp><range start='{SUBNET_PREFIX}.10' end='{SUBNET_PREFIX}.200'/></dhcp>
  </ip>
</network>
"""

POOL_XML = f"""
<pool type='dir'>
  <name>{POOL_NAME}</name>
  <target><path>{POOL_DIR}</path></target>
</pool>
"""


class Unavailable(Exception):
    """Why the real-daemon tests cannot run here (becomes the skip reason)."""


@dataclass(frozen=True)
class Libvirtd:
    netns: str
    pool: str
    network: str
    base_volume: str
    subnet_prefix: str


def image_path() -> Path:
    return Path(os.environ.get(IMAGE_ENV, DEFAULT_IMAGE))


def _qemu_runs_as_root() -> bool:
    try:
        text = QEMU_CONF.read_text()
    except OSError:
        return False
    lines = {line.replace(" ", "") for line in text.splitlines()}
    return 'user="root"' in lines and 'group="root"' in lines


def _running(pidfile: str) -> bool:
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return False
    return Path(f"/proc/{pid}").exists()


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise Unavailable("needs root to run libvirtd in a network namespace")
    for tool in ("libvirtd", "virtlogd", "qemu-system-x86_64", "ip", "dnsmasq"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise Unavailable(f"{tool} is not installed (.ci/apt/libvirt.txt)")
    if not image_path().is_file():
        raise Unavailable(
            f"no test pod VM image at {image_path()} "
            "(built by tests/providers/libvirt/build-test-image.sh)"
        )
    if not _qemu_runs_as_root():
        raise Unavailable(
            f'{QEMU_CONF} lacks user = "root" / group = "root" (.ci/setup.d/30-libvirt.sh)'
        )
    if _running("/run/libvirtd.pid"):
        raise Unavailable("a libvirtd not started by these tests is already running")
    conn = _connect_once()
    if conn is not None:
        conn.close()
        raise Unavailable("a libvirtd not started by these tests answers on its socket")


def _connect_once() -> libvirt.virConnect | None:
    try:
        return libvirt.open(URI)
    except libvirt.libvirtError:
        return None


def _wait_for_daemon(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"libvirtd exited: {log.read_text()[-2000:]}")
        conn = _connect_once()
        if conn is not None:
            conn.close()
            return
        time.sleep(0.3)
    raise Unavailable("libvirtd did not answer within 60 s")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _link_base_image(target: Path) -> None:
    source = image_path()
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _clear_domains(conn: libvirt.virConnect) -> None:
    """Remove pod VMs the tests made (they carry our metadata); leave any other domain."""
    for dom in conn.listAllDomains(0):
        try:
            ours = metadata.from_domain_xml(dom.XMLDesc(0)) is not None
        except libvirt.libvirtError:
            continue
        if not ours:
            continue
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


@contextlib.contextmanager
def running_libvirtd(workdir: Path) -> Iterator[Libvirtd]:
    """Start virtlogd and libvirtd in a fresh network namespace; stop both and remove it."""
    check_prerequisites()
    netns = f"ppt-libvirt-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    virtlogd = libvirtd = None
    conn: libvirt.virConnect | None = None
    network = pool = None
    try:
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"],
                       check=True)
        virtlogd_log = workdir / "virtlogd.log"
        libvirtd_log = workdir / "libvirtd.log"
        with virtlogd_log.open("wb") as out:
            virtlogd = subprocess.Popen(
                ["ip", "netns", "exec", netns, "virtlogd"], stdout=out, stderr=out
            )
        with libvirtd_log.open("wb") as out:
            libvirtd = subprocess.Popen(
                ["ip", "netns", "exec", netns, "libvirtd"], stdout=out, stderr=out
            )
        _wait_for_daemon(libvirtd, libvirtd_log)
        conn = libvirt.open(URI)
        _clear_domains(conn)  # left by an earlier run that was killed
        for name, lookup in ((NETWORK_NAME, conn.networkLookupByName),
                             (POOL_NAME, conn.storagePoolLookupByName)):
            with contextlib.suppress(libvirt.libvirtError):
                lookup(name).destroy()
        POOL_DIR.mkdir(parents=True, exist_ok=True)
        for leftover in POOL_DIR.iterdir():
            leftover.unlink()
        _link_base_image(POOL_DIR / BASE_VOLUME)
        network = conn.networkCreateXML(NETWORK_XML)
        pool = conn.storagePoolCreateXML(POOL_XML, 0)
        yield Libvirtd(
            netns=netns, pool=POOL_NAME, network=NETWORK_NAME, base_volume=BASE_VOLUME,
            subnet_prefix=SUBNET_PREFIX,
        )
    finally:
        if conn is not None:
            _clear_domains(conn)
            for obj in (network, pool):
                if obj is not None:
                    with contextlib.suppress(libvirt.libvirtError):
                        obj.destroy()
            conn.close()
        _stop(libvirtd)
        _stop(virtlogd)
        subprocess.run(["ip", "netns", "delete", netns], check=False)
        with contextlib.suppress(FileNotFoundError):
            (POOL_DIR / BASE_VOLUME).unlink()
