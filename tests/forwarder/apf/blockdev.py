"""Real block devices for the cloud volume tests: sparse files on loop devices, shown to the
forwarder as a libvirt VM's virtio disks (a ``dev`` directory of ``vdX`` symlinks), and
cleaned up (mounts, LUKS mappers, loop devices) whatever happened."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forwarder.apf.blockmount import CdhEndpoint
from forwarder.apf.cloudmounts import CloudVolumeMounts
from forwarder.apf.disks import DetectPolicy, DiskLayout
from forwarder.apf.interceptor import CLOUD_VOLUMES_KEY, Interceptor
from forwarder.apf.relay import AgentRelay
from forwarder.apf.volumes import mount_points
from protocols.kata import agent_pb2, oci_pb2
from protocols.ttrpc import Client, Server
from tests.forwarder.apf.helpers import FakeAgent

CRYPTSETUP = shutil.which("cryptsetup") or "/usr/sbin/cryptsetup"
# cryptsetup's default PBKDF (argon2id, up to 1 GiB) is for production; tests use a cheap one
CHEAP_PBKDF = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
XFS_MIN_BYTES = 320 * 1024 * 1024  # mkfs.xfs refuses file systems under 300 MB


def tools_missing() -> list[str]:
    return [t for t in ("losetup", "blkid", "mkfs.ext4", "mkfs.xfs", "mount", "umount")
            if shutil.which(t) is None]


def device_mapper_works() -> bool:
    """The kernel has device-mapper (a /dev/mapper/control node alone proves nothing)."""
    try:
        return "device-mapper" in Path("/proc/misc").read_text()
    except OSError:
        return False


def sh(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, check=False, timeout=120)


def blkid_value(device: str, tag: str) -> str:
    result = sh("blkid", "-p", "-s", tag, "-o", "value", device)
    return result.stdout.decode().strip()


@dataclass
class Disks:
    """Loop devices as ``/dev/vd<b+lun>`` of a fake ``dev`` root; mounts go below ``base``."""

    root: Path
    loops: list[str] = field(default_factory=list)
    mappers: set[str] = field(default_factory=set)

    @property
    def layout(self) -> DiskLayout:
        return DiskLayout(self.root / "dev", self.root / "sys")

    @property
    def base(self) -> str:
        return str(self.root / "cloud-volumes")

    def add(self, lun: int, size: int = 64 * 1024 * 1024, link: str = "") -> str:
        """A new empty disk at ``lun``, linked as ``dev/<link>`` (default: the virtio name
        ``vd<b+lun>``); returns its loop device."""
        image = self.root / f"disk{lun}.img"
        with open(image, "wb") as handle:
            handle.truncate(size)
        result = sh("losetup", "--find", "--show", str(image))
        assert result.returncode == 0, result.stderr
        loop = result.stdout.decode().strip()
        self.loops.append(loop)
        path = self.root / "dev" / (link or f"vd{chr(ord('b') + lun)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(loop)
        return loop

    def mounted_below_base(self) -> list[str]:
        return sorted(p for p in mount_points() if p.startswith(self.base + "/"))

    def open_mappers(self) -> list[str]:
        return sorted(name for name in self.mappers if os.path.lexists(f"/dev/mapper/{name}"))

    def cleanup(self) -> None:
        for point in reversed(self.mounted_below_base()):
            sh("umount", "-l", point)
        for name in self.open_mappers():
            sh(CRYPTSETUP, "close", name)
        for loop in self.loops:
            sh("losetup", "-d", loop)


@contextlib.contextmanager
def disks(root: Path) -> Iterator[Disks]:
    (root / "dev").mkdir()
    (root / "sys").mkdir()
    made = Disks(root)
    try:
        yield made
    finally:
        made.cleanup()


def luks_format(device: str, key: bytes) -> None:
    result = sh(CRYPTSETUP, "--batch-mode", "luksFormat", "--type", "luks2", *CHEAP_PBKDF,
                device, "-", stdin=key)
    assert result.returncode == 0, result.stderr


def contains(device: str, needle: bytes) -> bool:
    with open(device, "rb") as handle:
        return needle in handle.read()


def write(path: str, data: bytes) -> None:
    """Write and flush to the device, as a pod's process would before it exits."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


# a pod VM's forwarder in front of a fake kata-agent ----------------------------------

AGENT = "grpc.AgentService"
_ids = itertools.count(1)


@contextlib.asynccontextmanager
async def pod_vm(vm: Disks, agent: FakeAgent, cdh_socket: str = "") -> AsyncIterator[Client]:
    """One pod's forwarder: a fresh interceptor (and so a fresh set of volumes)."""
    relay = AgentRelay(agent.path, dial_timeout=5)
    volumes = CloudVolumeMounts(
        base=vm.base, layout=vm.layout, detect=DetectPolicy(2, 0.01),
        cdh=CdhEndpoint(cdh_socket or str(vm.root / "no-cdh.sock"), dial_attempts=2,
                        dial_delay=0.01))
    interceptor = Interceptor(relay, pod_netns="/run/netns/podns", pod="default/db",
                              is_mounted=lambda path: True, cloud_volumes=volumes)
    server = Server()
    interceptor.register(server)
    path = str(vm.root / f"fwd{next(_ids)}.sock")
    await server.start_unix(path)
    try:
        async with await Client.connect_unix(path) as client:
            yield client
    finally:
        await server.shutdown(grace=0)
        await relay.aclose()


def volume(lun: int, mount_point: str, **extra: str) -> dict[str, str]:
    return {"mount_point": mount_point, "fs_type": "ext4", "lun": str(lun),
            "disk_id": f"pvc-{lun}", **extra}


def request(volumes: dict[str, Any] | str, *destinations: str
            ) -> agent_pb2.CreateContainerRequest:
    text = volumes if isinstance(volumes, str) else json.dumps(volumes, separators=(",", ":"))
    spec = oci_pb2.Spec(Annotations={CLOUD_VOLUMES_KEY: text})
    for destination in destinations:
        spec.Mounts.add(destination=destination, type="bind", options=["rbind"],
                        source=f"/run/kata-containers/shared/containers/csi{destination}")
    cid = f"c{next(_ids)}"
    return agent_pb2.CreateContainerRequest(container_id=cid, exec_id=cid, OCI=spec)


async def create(client: Client, req: agent_pb2.CreateContainerRequest) -> None:
    await client.call_raw(AGENT, "CreateContainer", req.SerializeToString(), timeout=120)


async def destroy(client: Client) -> None:
    await client.call_raw(AGENT, "DestroySandbox",
                          agent_pb2.DestroySandboxRequest().SerializeToString(), timeout=60)


def sent_mounts(agent: FakeAgent) -> dict[str, tuple[str, str]]:
    payload = agent.calls("CreateContainer")[-1].payload
    spec = agent_pb2.CreateContainerRequest.FromString(payload).OCI
    return {m.destination: (m.source, m.type) for m in spec.Mounts}


def mounted_from(path: str) -> tuple[str, str]:
    result = sh("findmnt", "-n", "-o", "SOURCE,FSTYPE", "--mountpoint", path)
    source, fstype = result.stdout.decode().split()
    return source, fstype
