"""The adaptor on the libvirt provider against a real libvirtd with QEMU.

``cloud-api-adaptor libvirt`` runs as a subprocess inside the test libvirtd's network
namespace and is driven over its hypervisor socket the way the Kata shim drives it. The pod
VM is the small test image (tests/providers/libvirt/build-test-image.sh): it boots under
emulation and gets a DHCP lease, but it has no agent-protocol-forwarder, so the agent proxy
never connects. That makes two real situations:

- StartVM creates the domain, waits ``PROXY_TIMEOUT`` for the forwarder, then fails with a
  clear error and removes the domain, its root volume, its config drive and its NVRAM.
- StopVM while StartVM still waits for the forwarder (the domain is up with an address):
  StartVM is cancelled and StopVM returns once everything is gone.

While the domain exists the tests also check what the adaptor asked libvirt for: the name,
the qcow2 overlay on the base image, and the config drive carrying the adaptor's user-data.
Each test boots one VM (about a minute under emulation).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocols import apf, initdata, userdata
from protocols.ttrpc import Code, TTRPCError
from providers.libvirt import cidata
from providers.libvirt.storage import stream_download
from tests.adaptor.helpers import expect_error
from tests.adaptor.shim import Shim, shim_annotations
from tests.fakes import leakcheck
from tests.providers.libvirt.adaptorproc import AdaptorInNetns, adaptor_session
from tests.providers.libvirt.conftest import libvirt
from tests.providers.libvirt.libvirtd import Libvirtd

pytestmark = [pytest.mark.libvirt, pytest.mark.root, pytest.mark.netns]

PROXY_TIMEOUT = 15.0  # counted from the moment the VM has an address (dialing starts)
IP_TIMEOUT = "180s"  # the image needs about a minute for its lease under emulation
BOOT_WAIT = 240.0  # how long a test waits for the instance to be recorded
NVRAM_DIR = Path("/var/lib/libvirt/qemu/nvram")
NO_NETNS = "/var/run/netns/cni-absent"  # the pod network is read only when the netns exists

# A default INITDATA the adaptor puts into every pod VM's user-data; like every secret
# setting it must never reach the adaptor's log.
INITDATA_TOML = (
    'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n'
    f'"aa.toml" = "# libvirt adaptor test {uuid.uuid4().hex}"\n'
)
INITDATA = initdata.encode(INITDATA_TOML)
leakcheck.add_secret(INITDATA)


@dataclass
class Rig:
    daemon: Libvirtd
    adaptor: AdaptorInNetns
    conn: Any  # libvirt.virConnect
    pods_dir: str

    @property
    def shim(self) -> Shim:
        return self.adaptor.shim

    def pool(self) -> Any:
        return self.conn.storagePoolLookupByName(self.daemon.pool)

    def volume_names(self) -> set[str]:
        pool = self.pool()
        pool.refresh(0)
        return {v.name() for v in pool.listAllVolumes()}

    def domain_names(self) -> set[str]:
        return {d.name() for d in self.conn.listAllDomains(0)}


@pytest.fixture
async def rig(libvirtd: Libvirtd) -> AsyncIterator[Rig]:
    async with adaptor_session(
        libvirtd, "ppl",
        LIBVIRT_CPU="1",
        LIBVIRT_MEMORY="768",
        LIBVIRT_IP_TIMEOUT=IP_TIMEOUT,
        PROXY_TIMEOUT=f"{PROXY_TIMEOUT:g}s",
        INITDATA=INITDATA,
    ) as (adaptor, conn, env):
        yield Rig(libvirtd, adaptor, conn, env["PODS_DIR"])


async def start_and_wait_for_instance(
    rig: Rig, sid: str, pod: str, namespace: str
) -> tuple[asyncio.Task[None], str]:
    """Send StartVM and poll GetInfo until the adaptor has recorded the instance: the domain
    then runs and has an address. (GetInfo's Wait only waits for the sandbox, as upstream's.)"""
    start = asyncio.create_task(rig.shim.start_vm(sid, timeout=BOOT_WAIT + 120))
    deadline = asyncio.get_running_loop().time() + BOOT_WAIT
    while asyncio.get_running_loop().time() < deadline:
        try:
            return start, await rig.shim.get_info(pod, namespace)
        except TTRPCError as exc:
            if exc.code != Code.NOT_FOUND:
                raise
        done, _ = await asyncio.wait({start}, timeout=0.5)
        if start in done:
            with contextlib.suppress(TTRPCError):
                return start, await rig.shim.get_info(pod, namespace)
            raise AssertionError(f"StartVM ended before the instance existed: "
                                 f"{start.exception()!r}\n{rig.adaptor.log()[-4000:]}")
    raise AssertionError(f"no instance after {BOOT_WAIT}s\n{rig.adaptor.log()[-4000:]}")


def volume_path(rig: Rig, name: str) -> str:
    return str(rig.pool().storageVolLookupByName(name).path())


def check_domain(rig: Rig, vmid: str, name: str) -> ipaddress.IPv4Address:
    """The running domain is what the adaptor asked for; returns its leased address."""
    dom = rig.conn.lookupByUUIDString(vmid)
    assert dom.name() == name
    assert dom.isActive()
    xml = ET.fromstring(dom.XMLDesc(0))
    assert xml.get("type") == "qemu"
    assert int(xml.findtext("vcpu", "0")) == 1
    memory = xml.find("memory")
    assert memory is not None and int(memory.text or 0) == 768 * 1024
    assert memory.get("unit") == "KiB"
    sources = {d.get("device"): d.find("source") for d in xml.findall("devices/disk")}
    root_source, iso_source = sources.get("disk"), sources.get("cdrom")
    assert root_source is not None and iso_source is not None
    assert root_source.get("file") == volume_path(rig, f"{name}-root.qcow2")
    assert iso_source.get("file") == volume_path(rig, f"{name}-cloudinit.iso")
    # the root disk is a qcow2 overlay on the base image
    root_xml = ET.fromstring(rig.pool().storageVolLookupByName(f"{name}-root.qcow2").XMLDesc(0))
    root_format = root_xml.find("target/format")
    assert root_format is not None and root_format.get("type") == "qcow2"
    assert root_xml.findtext("backingStore/path") == volume_path(rig, rig.daemon.base_volume)
    # its address is a lease of the test network
    mac = xml.find("devices/interface/mac").get("address")  # type: ignore[union-attr]
    leases = rig.conn.networkLookupByName(rig.daemon.network).DHCPLeases()
    ips = [ipaddress.ip_address(lease["ipaddr"]) for lease in leases if lease["mac"] == mac]
    subnet = ipaddress.ip_network(f"{rig.daemon.subnet_prefix}.0/24")
    assert len(ips) == 1 and ips[0] in subnet, leases
    ip = ips[0]
    assert isinstance(ip, ipaddress.IPv4Address)
    return ip


def check_config_drive(rig: Rig, name: str, pod: str, namespace: str) -> None:
    """The config drive carries the adaptor's user-data for this pod."""
    vol = rig.pool().storageVolLookupByName(f"{name}-cloudinit.iso")
    files = cidata.read_iso(stream_download(rig.conn, vol))
    assert files["meta-data"] == f"local-hostname: {name}".encode()
    written = {f.path: f.content for f in userdata.parse(files["user-data"])}
    assert set(written) == {userdata.APF_JSON_PATH, userdata.INITDATA_PATH}
    config = apf.loads(written[userdata.APF_JSON_PATH])
    assert (config.pod_name, config.pod_namespace) == (pod, namespace)
    assert config.tls_server_cert.startswith("-----BEGIN CERTIFICATE-----")
    assert config.tls_server_key and config.tls_client_ca
    assert initdata.decode(written[userdata.INITDATA_PATH]) == INITDATA_TOML.encode()


def leftovers(rig: Rig, name: str) -> tuple[set[str], bool, bool]:
    """Volumes named after the instance, whether the domain exists, whether NVRAM does."""
    volumes = {v for v in rig.volume_names() if v.startswith(f"{name}-")}
    return volumes, name in rig.domain_names(), (NVRAM_DIR / f"{name}_VARS.fd").exists()


async def test_start_vm_fails_by_the_proxy_deadline_and_leaves_nothing(rig: Rig) -> None:
    sid = uuid.uuid4().hex
    pod, namespace = f"web-{sid[-6:]}", "libvirt-e2e"
    name = f"podvm-{pod}-{sid[:8]}"
    volumes_before = rig.volume_names()

    path = await rig.shim.create_vm(sid, shim_annotations(pod, namespace), NO_NETNS)
    assert path == f"{rig.pods_dir}/{sid}/agent.ttrpc"
    assert leftovers(rig, name) == (set(), False, False)  # CreateVM makes no VM

    start, vmid = await start_and_wait_for_instance(rig, sid, pod, namespace)
    recorded = time.monotonic()
    ip = check_domain(rig, vmid, name)
    assert leftovers(rig, name) == (
        {f"{name}-root.qcow2", f"{name}-cloudinit.iso"}, True, True
    )
    check_config_drive(rig, name, pod, namespace)

    error = await expect_error(start)
    waited = time.monotonic() - recorded
    assert error.code == Code.DEADLINE_EXCEEDED, error
    assert error.message.startswith(
        f"the forwarder at {ip}:15150 did not answer within {PROXY_TIMEOUT:g}s ("
    ), error.message
    assert waited >= PROXY_TIMEOUT * 0.9  # it waited for the forwarder, not less

    # gone by the time StartVM answers: domain, root overlay, config drive, NVRAM
    with pytest.raises(libvirt.libvirtError):
        rig.conn.lookupByUUIDString(vmid)
    assert leftovers(rig, name) == (set(), False, False)
    assert rig.volume_names() == volumes_before
    assert f"sandbox={sid}: StartVM failed, cleaning up instance {vmid}" in rig.adaptor.log()

    # the sandbox has no VM any more; the shim's StopVM after a failed start succeeds
    not_found = await expect_error(rig.shim.get_info(pod, namespace))
    assert not_found.code == Code.NOT_FOUND
    await rig.shim.stop_vm(sid)
    assert rig.volume_names() == volumes_before
    assert await rig.shim.version()  # still serving
    assert await rig.adaptor.terminate() == 0


async def test_stop_vm_while_start_waits_for_the_forwarder_removes_everything(
    rig: Rig,
) -> None:
    sid = uuid.uuid4().hex
    pod, namespace = f"db-{sid[-6:]}", "libvirt-e2e"
    name = f"podvm-{pod}-{sid[:8]}"
    volumes_before = rig.volume_names()

    await rig.shim.create_vm(sid, shim_annotations(pod, namespace), NO_NETNS)
    start, vmid = await start_and_wait_for_instance(rig, sid, pod, namespace)
    ip = check_domain(rig, vmid, name)
    # StartVM is now dialing the VM's forwarder port (nothing listens there)
    await rig.adaptor.wait_for_log(f"sandbox={sid}: dial {ip}:15150 attempt 1 failed",
                                   timeout=PROXY_TIMEOUT / 2)
    assert not start.done()
    assert leftovers(rig, name) == (
        {f"{name}-root.qcow2", f"{name}-cloudinit.iso"}, True, True
    )

    await rig.shim.stop_vm(sid)
    # StopVM answers only once the instance is gone
    with pytest.raises(libvirt.libvirtError):
        rig.conn.lookupByUUIDString(vmid)
    assert leftovers(rig, name) == (set(), False, False)
    assert rig.volume_names() == volumes_before

    cancelled = await expect_error(start)
    assert cancelled.code == Code.CANCELLED, cancelled
    log = rig.adaptor.log()
    assert f"sandbox={sid}: StopVM cancels the StartVM in progress" in log
    assert f"sandbox={sid}: stopped" in log

    # the sandbox is gone: no VM id for the pod, StartVM does not know it, StopVM again is fine
    assert (await expect_error(rig.shim.get_info(pod, namespace))).code == Code.NOT_FOUND
    unknown = await expect_error(rig.shim.start_vm(sid, timeout=30))
    assert unknown.code == Code.NOT_FOUND
    assert unknown.message == f"getting sandbox: sandbox {sid} does not exist"
    await rig.shim.stop_vm(sid)
    assert leftovers(rig, name) == (set(), False, False)
    assert await rig.adaptor.terminate() == 0
