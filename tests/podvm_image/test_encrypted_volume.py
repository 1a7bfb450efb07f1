"""An encrypted cloud volume in the pod VM image, for real: LUKS2 through our data hub with a
key from the loopback KBS, inside the VM's Debian kernel (dm-crypt), booted by the adaptor's
libvirt provider under the test's libvirtd with QEMU emulation, as the boot test does (KVM's
host-model CPU does not start on every nested-virtualization host).

As the Kata shim and a CSI block driver would drive it: two direct-volume entries for the
pod (``encrypt-type`` luks2 with a ``kbs-key-id``) name two volume files of the libvirt pool,
which the provider attaches at StartVM. The loopback KBS runs in the test's network namespace
on the libvirt network's bridge address; the initdata points the guest's attestation agent
and data hub at it (the VM attests with the sample attester, which the KBS's allow-all
policy accepts). Then, through the adaptor's agent proxy and the forwarder in the VM:

* CreateContainer with the first volume: the forwarder finds the disk, the data hub fetches
  the key and formats the fresh (zeroed) device as LUKS2 with a detached header, makes ext4
  on the mapping and mounts it. The development agent runs no container, so the test works
  at the mount's source, ``/run/cloud-volumes/<vol>`` (what the container's bind mount
  would show), through the agent's ``ExecProcess`` (``--allow-exec``): a marker written
  there reads back, ``/dev/mapper/caa-<vol>`` is a dm-crypt mapping of the volume's disk,
  and after ``sync`` the volume file on the host holds the marker nowhere and no
  recognisable file system: unreadable without the key.
* CreateContainer with the second volume, LUKS2-formatted on the host with another key than
  the one the KBS serves for its key id: the call fails naming the data hub's secure mount,
  the data hub's journal says the key was wrong, nothing of that volume is mounted or mapped
  in the VM, the volume still opens with its own key on the host, and the agent still
  answers.
* DestroySandbox unmounts the volume and closes its mapping; StopVM deletes the domain and
  leaves both volume files where they were.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from adaptor.volumes import entry_name, scan
from protocols import initdata
from protocols.kata import agent_pb2, health_pb2, oci_pb2
from protocols.ttrpc import Client, TTRPCError
from tests.adaptor.shim import shim_annotations
from tests.podvm_image.agentexec import AGENT, sh
from tests.podvm_image.kbsproc import KbsInNetns

libvirt = pytest.importorskip("libvirt")

from tests.podvm_image.podvm import (  # noqa: E402
    BOOT_TIMEOUT,
    NO_NETNS,
    agent_check,
    domain_names,
    pool_volumes,
    refresh_pool,
    running_adaptor,
)
from tests.providers.libvirt import libvirtd as daemon  # noqa: E402
from tests.providers.libvirt.adaptorproc import AdaptorInNetns  # noqa: E402

pytestmark = [pytest.mark.libvirt, pytest.mark.root, pytest.mark.netns]

MOUNT_TIMEOUT = 300.0  # attestation, luksFormat and luksOpen (argon2) and mkfs in the VM
VOLUME_SIZE = 64 * 1024 * 1024
POD_UID = str(uuid.uuid4())
RUN = uuid.uuid4().hex[:8]
GOOD_KEY_ID = f"default/volume-key/good-{RUN}"
WRONG_KEY_ID = f"default/volume-key/other-{RUN}"
SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"
MARKER_PREFIX = "peerpods-encrypted-volume-marker-"
#: the adaptor's real entry point, with the direct-volume directory of this test
ADAPTOR = ("import sys; from adaptor.__main__ import main; "
           "sys.exit(main(sys.argv[2:], direct_volumes_dir=sys.argv[1]))")


def volume_path(name: str) -> str:
    """A CSI volume's publish path (the container mount's source), as kubelet makes it."""
    return f"/var/lib/kubelet/pods/{POD_UID}/volumes/kubernetes.io~csi/{name}/mount"


@dataclass(frozen=True)
class Volumes:
    directory: Path  # the direct-volume directory the adaptor reads
    fresh: str  # volume file: zeroed, encrypted in the VM with the KBS's key
    preformatted: str  # volume file: LUKS2 on the host with ``own_key``
    own_key: bytes
    fresh_source: str  # their container mount sources
    preformatted_source: str

    def lun(self, source: str) -> int:
        """The LUN (``vol-<N>``) the adaptor gives the volume mounted from ``source``."""
        return [v.path for v in scan(str(self.directory), POD_UID)].index(source)


def luks_format(path: str, key: bytes) -> None:
    # PBKDF2 with few iterations: the VM (1 GiB) need not fit the host's argon2 memory cost
    subprocess.run(["cryptsetup", "--batch-mode", "luksFormat", "--type", "luks2",
                    "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
                    "--key-file", "-", path], input=key, check=True, capture_output=True)


def opens_with(path: str, key: bytes) -> bool:
    done = subprocess.run(["cryptsetup", "luksOpen", "--test-passphrase", "--key-file", "-",
                           path], input=key, capture_output=True)
    return done.returncode == 0


def publish(directory: Path, source: str, disk: str, key_id: str) -> None:
    """What ``kata-runtime direct-volume add`` leaves for a CSI block volume."""
    entry = directory / entry_name(source)
    entry.mkdir(parents=True)
    info = {"volume-type": "block", "device": disk, "fstype": "ext4", "options": [],
            "metadata": {"cloud-volume-path": disk, "encrypt-type": "luks2",
                         "kbs-key-id": key_id}}
    (entry / "mountInfo.json").write_text(json.dumps(info))


@pytest.fixture
def volumes(podvm_libvirtd: daemon.Libvirtd) -> Iterator[Volumes]:
    for tool in ("cryptsetup", "blkid"):
        if not any(Path(d, tool).exists() for d in ("/usr/sbin", "/sbin", "/usr/bin")):
            pytest.skip(f"{tool} is not installed (.ci/apt/volumes.txt)")
    fresh = daemon.POOL_DIR / f"pvc-fresh-{RUN}.img"
    preformatted = daemon.POOL_DIR / f"pvc-preformatted-{RUN}.img"
    directory = Path(tempfile.mkdtemp(prefix="ppv", dir="/tmp")) / "direct-volumes"
    own_key = secrets.token_bytes(64)
    try:
        for path in (fresh, preformatted):
            with path.open("wb") as handle:
                handle.truncate(VOLUME_SIZE)
        luks_format(str(preformatted), own_key)
        refresh_pool(podvm_libvirtd)  # the provider attaches storage volumes of a pool only
        made = Volumes(directory, str(fresh), str(preformatted), own_key,
                       volume_path(f"pvc-fresh-{RUN}"), volume_path(f"pvc-other-{RUN}"))
        publish(directory, made.fresh_source, made.fresh, GOOD_KEY_ID)
        publish(directory, made.preformatted_source, made.preformatted, WRONG_KEY_ID)
        yield made
    finally:
        fresh.unlink(missing_ok=True)
        preformatted.unlink(missing_ok=True)
        refresh_pool(podvm_libvirtd)
        subprocess.run(["rm", "-rf", str(directory.parent)], check=False)


@pytest.fixture
async def kbs(podvm_libvirtd: daemon.Libvirtd, tmp_path: Path) -> AsyncIterator[KbsInNetns]:
    """The loopback KBS on the libvirt network's bridge, inside the test's namespace. It
    serves a fresh key for each key id: the pre-formatted volume's own key is not one."""
    server = KbsInNetns(podvm_libvirtd.netns, f"{podvm_libvirtd.subnet_prefix}.1", {
        GOOD_KEY_ID: secrets.token_bytes(64),
        WRONG_KEY_ID: secrets.token_bytes(64),
    }, tmp_path)
    try:
        await server.start()
        yield server
    finally:
        await server.aclose()


def initdata_toml(kbs_url: str) -> str:
    return (
        'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n'
        f"\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"{kbs_url}\"\n'''\n"
        f"\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"{kbs_url}\"\n'''\n"
        f'"policy.rego" = "package agent_policy\\n# encrypted volume test {RUN}\\n"\n'
    )


@pytest.fixture
async def adaptor(podvm_libvirtd: daemon.Libvirtd, kbs: KbsInNetns,
                  volumes: Volumes) -> AsyncIterator[AdaptorInNetns]:
    env = {"INITDATA": initdata.encode(initdata_toml(kbs.url)), "LIBVIRT_CPU": "2"}
    command = (sys.executable, "-c", ADAPTOR, str(volumes.directory), "libvirt")
    async with running_adaptor(podvm_libvirtd, env, command) as proc:
        yield proc


def container(cid: str, *sources: str) -> agent_pb2.CreateContainerRequest:
    """A CreateContainer as the shim sends it, with each source bind-mounted at /data<N>."""
    spec = oci_pb2.Spec(
        Version="1.1.0",
        Mounts=[oci_pb2.Mount(destination=f"/data{i}", source=s, type="bind",
                              options=["rbind", "rw"]) for i, s in enumerate(sources)],
        Annotations={SANDBOX_UID: POD_UID},
    )
    return agent_pb2.CreateContainerRequest(container_id=cid, exec_id=cid, OCI=spec)


async def call(client: Client, method: str, request: Message, timeout: float = 60.0) -> None:
    await client.call(AGENT, method, request, empty_pb2.Empty, timeout=timeout)


async def mounted_and_mapped(client: Client, cid: str, vol: str) -> tuple[bool, bool]:
    """Whether /run/cloud-volumes/<vol> is a mount point, and /dev/mapper/caa-<vol> exists."""
    out = await sh(client, cid, f"grep -c ' /run/cloud-volumes/{vol} ' /proc/mounts || true; "
                                f"test -e /dev/mapper/caa-{vol} && echo mapped || true")
    lines = out.split()
    return lines[0] != "0", "mapped" in lines


def file_contains(path: str, needle: bytes) -> bool:
    """Scan the whole file (overlapping reads, so a match across two reads counts)."""
    with open(path, "rb") as handle:
        tail = b""
        while block := handle.read(1 << 20):
            if needle in tail + block:
                return True
            tail = block[-(len(needle) - 1):]
    return False


@dataclass(frozen=True)
class OnHost:
    """What the volume file shows on the host, without the key."""

    holds_marker: bool
    holds_marker_prefix: bool
    written: bool  # the VM wrote to it (its first MiB is no longer all zeros)
    signature: str  # what ``blkid -p`` recognises ("" when nothing)
    size: int


def on_host(path: str, marker: str) -> OnHost:
    with open(path, "rb") as handle:
        written = bool(handle.read(1 << 20).strip(b"\0"))
    probe = subprocess.run(["blkid", "-p", path], capture_output=True, text=True)
    return OnHost(
        holds_marker=file_contains(path, marker.encode()),
        holds_marker_prefix=file_contains(path, MARKER_PREFIX.encode()),
        written=written,
        signature="" if probe.returncode == 2 else probe.stdout or f"exit {probe.returncode}",
        size=os.path.getsize(path),
    )


@pytest.mark.timeout(BOOT_TIMEOUT + 600)
async def test_an_encrypted_volume_opens_with_the_kbs_key_and_only_with_it(
    adaptor: AdaptorInNetns, podvm_libvirtd: daemon.Libvirtd, kbs: KbsInNetns,
    volumes: Volumes,
) -> None:
    sid = uuid.uuid4().hex
    pod = f"enc-{sid[-6:]}"
    name = f"podvm-{pod}-{sid[:8]}"
    good = f"vol-{volumes.lun(volumes.fresh_source)}"
    bad = f"vol-{volumes.lun(volumes.preformatted_source)}"
    marker = f"{MARKER_PREFIX}{uuid.uuid4().hex}"

    annotations = {**shim_annotations(pod, "podvm-image"), SANDBOX_UID: POD_UID}
    agent_socket = await adaptor.shim.create_vm(sid, annotations, NO_NETNS)
    started = time.monotonic()
    await adaptor.shim.start_vm(sid, timeout=BOOT_TIMEOUT)
    print(f"StartVM: {time.monotonic() - started:.0f}s")

    async with await Client.connect_unix(agent_socket) as client:
        await call(client, "CreateSandbox",
                   agent_pb2.CreateSandboxRequest(hostname=pod, sandbox_id=sid))
        started = time.monotonic()
        await call(client, "CreateContainer", container("c1", volumes.fresh_source),
                   timeout=MOUNT_TIMEOUT)
        print(f"CreateContainer (attest, fetch key, luksFormat, open, mkfs, mount): "
              f"{time.monotonic() - started:.0f}s")
        assert {"path": GOOD_KEY_ID, "status": 200} in kbs.requests()

        # the guest components the data hub needs run from the initdata's configuration
        assert (await sh(client, "c1", "systemctl is-active attestation-agent "
                                       "confidential-data-hub")).split() == ["active"] * 2
        # the provider's root disk is SATA: the volumes are vda (LUN 0) and vdb (LUN 1)
        disks = await sh(client, "c1", "for d in /sys/block/vd*; do "
                                       "echo ${d##*/} $(cat $d/serial); done")
        assert disks.splitlines() == ["vda peerpods-lun-0", "vdb peerpods-lun-1"]

        # readable in the pod's mount
        source = f"/run/cloud-volumes/{good}"
        await sh(client, "c1", f"echo {marker} > {source}/marker && sync")
        assert (await sh(client, "c1", f"cat {source}/marker")).strip() == marker
        mounts = await sh(client, "c1", "cat /proc/mounts")
        assert f"/dev/mapper/caa-{good} {source} ext4 " in mounts
        # a dm-crypt mapping of the volume's disk (the one the provider gave its LUN)
        status = await sh(client, "c1", f"cryptsetup status caa-{good}")
        assert "is active and is in use" in status and "aes-xts-plain64" in status
        device = next(line.split(":", 1)[1].strip() for line in status.splitlines()
                      if line.strip().startswith("device:"))
        serial = await sh(client, "c1", f"cat /sys/block/{os.path.basename(device)}/serial")
        assert serial.strip() == f"peerpods-lun-{good[4:]}"
        table = await sh(client, "c1", f"dmsetup table caa-{good}")
        assert " crypt aes-xts-plain64 " in table

        # unreadable without the key: the data reached the file, encrypted
        fresh = await asyncio.to_thread(on_host, volumes.fresh, marker)
        assert fresh == OnHost(holds_marker=False, holds_marker_prefix=False, written=True,
                               signature="", size=VOLUME_SIZE)

        # a key the volume was not made with: a clear error, nothing left, still serving
        with pytest.raises(TTRPCError) as info:
            await call(client, "CreateContainer",
                       container("c2", volumes.preformatted_source), timeout=MOUNT_TIMEOUT)
        message = info.value.message
        assert f"failed to secure-mount cloud volume {bad} at /run/cloud-volumes/{bad}" in message
        assert "CDH SecureMount RPC failed: [CDH] [ERROR]: Secure Mount failed" in message
        assert {"path": WRONG_KEY_ID, "status": 200} in kbs.requests()
        journal = await sh(client, "c1", "journalctl -b -o cat -u confidential-data-hub")
        assert "No key available with this passphrase" in journal, journal[-3000:]
        assert await mounted_and_mapped(client, "c1", bad) == (False, False)
        assert await mounted_and_mapped(client, "c1", good) == (True, True)
        # not formatted over: it still opens with its own key
        assert await asyncio.to_thread(opens_with, volumes.preformatted, volumes.own_key)
        status_code, _ = await agent_check(agent_socket)
        assert status_code == health_pb2.HealthCheckResponse.SERVING

        # neither key ever reached the VM's logs
        logs = await sh(client, "c1", "journalctl -b -o cat")
        for key in kbs.resources.values():
            assert key.hex() not in logs and repr(key)[2:-1] not in logs

        # DestroySandbox: unmounted and closed (the agent forgot c1: look from a new one)
        await call(client, "DestroySandbox", agent_pb2.DestroySandboxRequest())
        await call(client, "CreateContainer", container("after"))
        assert await mounted_and_mapped(client, "after", good) == (False, False)

    await adaptor.shim.stop_vm(sid)
    assert name not in domain_names()
    assert {Path(volumes.fresh).name, Path(volumes.preformatted).name} <= pool_volumes(
        podvm_libvirtd)
    assert (await asyncio.to_thread(on_host, volumes.fresh, marker)).size == VOLUME_SIZE
    assert await asyncio.to_thread(opens_with, volumes.preformatted, volumes.own_key)
    assert await adaptor.terminate() == 0
