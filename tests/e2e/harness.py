"""The pieces of the end-to-end tests: a worker node in a network namespace, the real
``cloud-api-adaptor`` running in it as a subprocess, the Kata shim's two clients (a new
connection per hypervisor call; one long-lived agent connection per sandbox), and checks
for anything a pod VM could leave behind.

Addresses: the worker's uplink 192.0.2.1/24 (documentation range), the pod network
10.244.1.0/24 on the worker's ``cni0`` bridge, the pod VMs in 198.18.0.0/24 on the local
provider's bridge. All of them exist only inside namespaces the tests create.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from adaptor import ctl
from protocols.kata import agent_pb2, health_pb2, hypervisor_pb2, oci_pb2, podvminfo_pb2
from protocols.ttrpc import Client, Code, ConnectionClosed, TTRPCError
from providers.local.layout import poll_until
from tests.netns import Netns, NetnsPool, sh, veth

WORKER_IP = "192.0.2.1"
WORKER_GATEWAY = "192.0.2.254"  # nobody answers: it only gives the worker a default route
POD_GATEWAY = "10.244.1.1"
VM_SUBNET = "198.18.0.0/24"
PROVIDER_BRIDGE = "ppbr0"
POD_NAMESPACE = "e2e"
HYPERVISOR = "hypervisor.Hypervisor"
START_TIMEOUT = 120.0  # StartVM deadline sent on the wire (the shim sends 600 s)
DIAL_TIMEOUT = 30.0  # the shim's agent dial_timeout
DNS = ["nameserver 10.96.0.10", "search e2e.svc.cluster.local svc.cluster.local"]
SHIM_NAMESPACES = [{"Type": "ipc"}, {"Type": "uts"}, {"Type": "mount"}]

Resp = TypeVar("Resp", bound=Message)


# --------------------------------------------------------------------------- topology


@dataclass(frozen=True, slots=True)
class Pod:
    """A pod's network namespace on the worker, wired like a bridge CNI plugin does."""

    number: int
    ns: Netns

    @property
    def ip(self) -> str:
        return f"10.244.1.{20 + self.number}"

    @property
    def name(self) -> str:
        return f"web-{self.number}"


class WorkerNode:
    """A namespace that plays a worker node: ``uplink`` with the node IP and the default
    route, and a ``cni0`` bridge holding the pods' gateway address."""

    def __init__(self, pool: NetnsPool) -> None:
        self._pool = pool
        ns = self.ns = pool.create("worker")
        ns.ip("link", "add", "uplink", "type", "veth", "peer", "name", "uplink-peer")
        ns.ip("link", "set", "uplink-peer", "up")
        ns.ip("addr", "add", f"{WORKER_IP}/24", "dev", "uplink")
        ns.ip("link", "set", "uplink", "up")
        ns.ip("route", "add", "default", "via", WORKER_GATEWAY, "dev", "uplink", "onlink")
        ns.ip("link", "add", "cni0", "type", "bridge")
        ns.ip("addr", "add", f"{POD_GATEWAY}/24", "dev", "cni0")
        ns.ip("link", "set", "cni0", "up")

    def add_pod(self, number: int) -> Pod:
        pod = Pod(number, self._pool.create(f"pod{number}"))
        veth(self.ns, f"vp{number}", pod.ns, "eth0")
        self.ns.ip("link", "set", f"vp{number}", "master", "cni0", "up")
        pod.ns.ip("addr", "add", f"{pod.ip}/24", "dev", "eth0")
        pod.ns.ip("link", "set", "eth0", "up")
        pod.ns.ip("route", "add", "default", "via", POD_GATEWAY, "dev", "eth0")
        return pod

    def links(self) -> set[str]:
        return link_names(self.ns)

    def notrack_rules(self) -> list[str]:
        rules = self.ns.run(["iptables", "-w", "-t", "raw", "-S"])
        return [line for line in rules.splitlines() if "peerpod" in line]


def link_names(ns: Netns) -> set[str]:
    names = set()
    for line in ns.ip("-o", "link", "show").splitlines():
        # "3: uplink@uplink-peer: <...>" -> "uplink"
        names.add(line.split(":", 2)[1].strip().split("@", 1)[0])
    return names


def vxlan_id(ns: Netns, device: str) -> int:
    """The VXLAN id of ``device`` in ``ns``."""
    match = re.search(r"vxlan id (\d+)", ns.ip("-d", "link", "show", "dev", device))
    assert match, f"{device} in {ns.name} is not a vxlan device"
    return int(match.group(1))


def vm_pod_netns(instance_id: str) -> Netns:
    """The pod VM's pod network namespace (the forwarder's ``podns``)."""
    return Netns(f"ppvm-{instance_id}-pod")


def netns_names() -> set[str]:
    out = sh(["ip", "netns", "list"])
    return {line.split(" ", 1)[0] for line in out.splitlines() if line.strip()}


# --------------------------------------------------------------------------- adaptor


class Adaptor:
    """``cloud-api-adaptor local`` as a subprocess inside the worker's network namespace.

    Only the network namespace is entered (``nsenter --net``): the adaptor shares the
    machine's mount namespace, so the namespaces its provider creates under /run/netns are
    visible to the test. Every path lives under ``root``, so a restart with the same
    object finds the same pods dir, TLS state and local provider records.
    """

    def __init__(self, worker: Netns, root: Path, *, node: str,
                 env: Mapping[str, str] | None = None) -> None:
        self.worker = worker
        self.root = root
        self.socket = root / "hv.sock"
        self.pods_dir = root / "pods"
        self.state_dir = root / "local"
        self.log_path = root / "adaptor.log"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "REMOTE_HYPERVISOR_ENDPOINT": str(self.socket),
            "PODS_DIR": str(self.pods_dir),
            "LOCAL_STATE_DIR": str(self.state_dir),
            "LOCAL_NETNS": "on",
            "LOCAL_SUBNET": VM_SUBNET,
            "LOCAL_BRIDGE": PROVIDER_BRIDGE,
            "TUNNEL_TYPE": "vxlan",
            "NODE_NAME": node,
            "PROBE_PORT": "8000",  # the worker namespace has its own ports
            "SHUTDOWN_GRACE_PERIOD": "5s",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                ["nsenter", f"--net={self.worker.path}", "--",
                 sys.executable, "-m", "adaptor", "local"],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )

    async def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until the hypervisor socket answers (after its restore)."""
        assert self.proc is None or self.proc.poll() is not None, "adaptor already running"
        proc = self.proc = self._spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the adaptor exited with status {proc.returncode}:\n"
                                     f"{self.log_tail()}")
            with contextlib.suppress(OSError, TTRPCError, ConnectionClosed, TimeoutError):
                async with asyncio.timeout(2):
                    await Shim(self.socket).version()
                return
            if loop.time() > deadline:
                raise AssertionError(f"the adaptor did not answer in {timeout}s:\n"
                                     f"{self.log_tail()}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: the adaptor gets no chance to clean up (a crash, an OOM kill)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``. Returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            if not await poll_until(lambda: proc.poll() is not None, timeout):
                proc.kill()
                proc.wait(timeout=30)
                return None
        return proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def agent_calls(self, instance_id: str) -> list[dict[str, Any]]:
        """What the development agent of one pod VM has received, in order."""
        path = self.state_dir / instance_id / "agent-calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def vm_log(self, instance_id: str) -> str:
        path = self.state_dir / instance_id / "vm.log"
        return path.read_text(errors="replace") if path.exists() else "(no vm.log)"


# --------------------------------------------------------------------------- the shim


class Shim:
    """The Kata shim's hypervisor client: a new unix connection for every call."""

    def __init__(self, socket: Path) -> None:
        self.socket = str(socket)

    async def _call(self, service: str, method: str, request: Message,
                    response: type[Resp], timeout: float) -> Resp:
        async with await Client.connect_unix(self.socket) as client:
            return await client.call(service, method, request, response, timeout=timeout)

    async def create_vm(self, sandbox_id: str, pod: Pod) -> str:
        request = hypervisor_pb2.CreateVMRequest(
            id=sandbox_id, networkNamespacePath=pod.ns.path,
            annotations=ctl.shim_annotations(pod=pod.name, namespace=POD_NAMESPACE),
        )
        reply = await self._call(HYPERVISOR, "CreateVM", request,
                                 hypervisor_pb2.CreateVMResponse, 60)
        return reply.agentSocketPath

    async def start_vm(self, sandbox_id: str) -> None:
        await self._call(HYPERVISOR, "StartVM", hypervisor_pb2.StartVMRequest(id=sandbox_id),
                         hypervisor_pb2.StartVMResponse, START_TIMEOUT)

    async def stop_vm(self, sandbox_id: str) -> None:
        await self._call(HYPERVISOR, "StopVM", hypervisor_pb2.StopVMRequest(id=sandbox_id),
                         hypervisor_pb2.StopVMResponse, 60)

    async def version(self) -> str:
        reply = await self._call(HYPERVISOR, "Version", hypervisor_pb2.VersionRequest(),
                                 hypervisor_pb2.VersionResponse, 5)
        return reply.version

    async def instance_id(self, pod: Pod) -> str:
        """``podvminfo.PodVMInfo/GetInfo``: the pod's instance id ("" when it has none)."""
        request = podvminfo_pb2.GetInfoRequest(PodName=pod.name, PodNamespace=POD_NAMESPACE)
        try:
            reply = await self._call("podvminfo.PodVMInfo", "GetInfo", request,
                                     podvminfo_pb2.GetInfoResponse, 10)
        except TTRPCError as exc:
            if exc.code == Code.NOT_FOUND:
                return ""
            raise
        return reply.VMID


# --------------------------------------------------------------------------- agent requests


def create_sandbox_request(sandbox_id: str, pod: Pod) -> agent_pb2.CreateSandboxRequest:
    return agent_pb2.CreateSandboxRequest(hostname=pod.name, dns=DNS, sandbox_id=sandbox_id)


def create_container_request(container_id: str, pod: Pod) -> agent_pb2.CreateContainerRequest:
    """What the shim sends for a pod's first (pause) container, trimmed to the essentials."""
    spec = oci_pb2.Spec(
        Version="1.1.0",
        Process=oci_pb2.Process(Args=["/pause"], Cwd="/"),
        Root=oci_pb2.Root(Path=f"/run/kata-containers/shared/containers/{container_id}/rootfs"),
        Hostname=pod.name,
        Annotations={"io.kubernetes.cri.container-type": "sandbox",
                     "io.kubernetes.cri.sandbox-name": pod.name},
        Linux=oci_pb2.Linux(Namespaces=[oci_pb2.LinuxNamespace(**ns) for ns in SHIM_NAMESPACES]),
    )
    return agent_pb2.CreateContainerRequest(container_id=container_id, exec_id=container_id,
                                            OCI=spec)


class AgentSession:
    """One sandbox's agent client as the shim keeps it: one connection for all calls, dialled
    with retries for up to ``DIAL_TIMEOUT``; after the connection breaks the next call dials
    again. Only calls made with ``retry=True`` (idempotent ones) are sent a second time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.dials = 0
        self._client: Client | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._client.closed

    async def _connect(self) -> Client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DIAL_TIMEOUT
        while True:
            try:
                client = await Client.connect_unix(self.path)
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)
                continue
            self.dials += 1
            return client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def call(self, service: str, method: str, request: Message, response: type[Resp],
                   timeout: float | None = 60.0, *, retry: bool = False) -> Resp:
        if self._client is None or self._client.closed:
            await self._drop()
            self._client = await self._connect()
        try:
            return await self._client.call(service, method, request, response, timeout=timeout)
        except ConnectionClosed:
            await self._drop()
            if not retry:
                raise
        self._client = await self._connect()
        return await self._client.call(service, method, request, response, timeout=timeout)

    async def check(self) -> str:
        reply = await self.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                health_pb2.HealthCheckResponse, 30, retry=True)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    async def aclose(self) -> None:
        await self._drop()


# --------------------------------------------------------------------------- residue


def processes_mentioning(text: str) -> list[str]:
    """``pid: command line`` of every live process whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if text in cmdline:
            found.append(f"{entry}: {cmdline}")
    return found


def vm_residue(worker: WorkerNode, adaptor: Adaptor, pod: Pod, instance_id: str,
               sandbox_id: str) -> list[str]:
    """Everything one stopped pod VM, its tunnel and its sandbox left behind (empty: none)."""
    found = []
    names = netns_names()
    for name in (f"ppvm-{instance_id}", f"ppvm-{instance_id}-pod"):
        if name in names:
            found.append(f"network namespace {name}")
    if f"ppv{instance_id}" in worker.links():
        found.append(f"veth ppv{instance_id} in the worker namespace")
    if pod.ns.exists():
        if "vxlan1" in link_names(pod.ns):
            found.append(f"vxlan1 in {pod.ns.name}")
        if "ingress" in pod.ns.run(["tc", "qdisc", "show", "dev", "eth0"]):
            found.append(f"ingress qdisc on eth0 in {pod.ns.name}")
    found += [f"process {p}" for p in processes_mentioning(str(adaptor.state_dir / instance_id))]
    if (adaptor.state_dir / instance_id).exists():
        found.append(f"provider directory {adaptor.state_dir / instance_id}")
    pod_dir = adaptor.pods_dir / sandbox_id
    if pod_dir.exists():
        leftover = sorted(p.name for p in pod_dir.iterdir())
        found.append(f"sandbox directory {pod_dir} ({', '.join(leftover) or 'empty'})")
    return found


def worker_residue(worker: WorkerNode, adaptor: Adaptor, links_before: set[str]) -> list[str]:
    """Anything pod VMs left on the worker once all of them are stopped (empty: none)."""
    found = []
    extra = worker.links() - links_before - {PROVIDER_BRIDGE}
    if extra:
        found.append(f"links in the worker namespace: {', '.join(sorted(extra))}")
    found += [f"iptables rule {rule}" for rule in worker.notrack_rules()]
    found += [f"process {p}" for p in processes_mentioning(str(adaptor.state_dir))]
    if adaptor.state_dir.exists() and any(adaptor.state_dir.iterdir()):
        found.append(f"provider records: {sorted(p.name for p in adaptor.state_dir.iterdir())}")
    return found


def destroy_leftovers(adaptor: Adaptor) -> None:
    """Safety net after a failed test: kill the pod VMs the adaptor left and remove their
    namespaces (processes are found by their unique paths, namespaces by instance id)."""
    if adaptor.state_dir.exists():
        for vm_dir in adaptor.state_dir.iterdir():
            instance_id = vm_dir.name
            for name in (f"ppvm-{instance_id}-pod", f"ppvm-{instance_id}"):
                if name not in netns_names():
                    continue
                for pid in sh(["ip", "netns", "pids", name], check=False).split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                sh(["ip", "netns", "delete", name], check=False)
    for line in processes_mentioning(str(adaptor.root)):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
