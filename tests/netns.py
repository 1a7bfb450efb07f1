"""Helpers for tests that build topologies out of real network namespaces.

Every namespace is created through a :class:`NetnsPool`, which deletes all of them (and any
extra names registered with :meth:`NetnsPool.adopt`) when the test ends, pass or fail.
Names are unique per test run, so parallel or aborted runs do not collide. Addresses used
in such topologies must stay inside the namespaces (documentation ranges or 10.x).

    pool = NetnsPool()               # usually via a fixture that calls pool.close()
    worker = pool.create("w")        # -> Netns(name="pp1a2b3c-w", path="/run/netns/...")
    worker.ip("link", "add", "br0", "type", "bridge")
    out = worker.run(["iptables", "-t", "raw", "-S"])
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

NETNS_DIR = "/run/netns"


class CommandFailed(AssertionError):
    pass


def sh(argv: Sequence[str], *, check: bool = True, input: str | None = None) -> str:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, input=input, timeout=60, check=False
    )
    if check and proc.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)} -> exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass(frozen=True, slots=True)
class Netns:
    name: str

    @property
    def path(self) -> str:
        return f"{NETNS_DIR}/{self.name}"

    def ip(self, *args: str, check: bool = True) -> str:
        return sh(["ip", "-n", self.name, *args], check=check)

    def run(self, argv: Sequence[str], *, check: bool = True) -> str:
        return sh(["ip", "netns", "exec", self.name, *argv], check=check)

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def exists(self) -> bool:
        return os.path.exists(self.path)


class NetnsPool:
    """Creates uniquely named namespaces and deletes every one of them in :meth:`close`."""

    def __init__(self) -> None:
        self.prefix = f"pp{secrets.token_hex(3)}"
        self._names: list[str] = []

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def create(self, suffix: str, *, lo_up: bool = True) -> Netns:
        ns = Netns(self.name(suffix))
        self._names.append(ns.name)
        sh(["ip", "netns", "add", ns.name])
        if lo_up:
            ns.ip("link", "set", "lo", "up")
        return ns

    def adopt(self, suffix: str) -> Netns:
        """A name some code under test may create; it is deleted at close if it exists."""
        ns = Netns(self.name(suffix))
        self._names.append(ns.name)
        return ns

    def close(self) -> None:
        for name in reversed(self._names):
            if os.path.exists(f"{NETNS_DIR}/{name}"):
                sh(["ip", "netns", "delete", name], check=False)
        self._names.clear()


def veth(a: Netns, a_name: str, b: Netns, b_name: str) -> None:
    """A veth pair with one end in each namespace (both ends left down)."""
    sh(["ip", "link", "add", a_name, "netns", a.name, "type", "veth", "peer", "name", b_name,
        "netns", b.name])  # fmt: skip


# --------------------------------------------------------------------------- traffic

_SERVER = textwrap.dedent(
    """
    import socket, sys
    proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if proto == "tcp":
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, port)); srv.listen(4)
        print("ready", flush=True)
        conn, peer = srv.accept()
        data = b""
        while not data.endswith(b"\\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        conn.sendall(peer[0].encode() + b" " + data)
        conn.close()
    else:
        srv = socket.socket(family, socket.SOCK_DGRAM)
        srv.bind((host, port))
        print("ready", flush=True)
        data, peer = srv.recvfrom(65536)
        srv.sendto(peer[0].encode() + b" " + data, peer)
    """
)

_CLIENT = textwrap.dedent(
    """
    import socket, sys
    proto, host, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(payload.encode() + b"\\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    else:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(1)
        for _ in range(5):  # the first datagram may wait on ARP
            s.sendto(payload.encode() + b"\\n", (host, port))
            try:
                out, _ = s.recvfrom(65536)
                break
            except TimeoutError:
                continue
        else:
            sys.exit("no UDP reply")
    sys.stdout.write(out.decode())
    """
)


class EchoServer:
    """A one-shot TCP or UDP server in a namespace that answers ``"<peer ip> <payload>"``."""

    def __init__(self, ns: Netns, proto: str, host: str, port: int) -> None:
        self.proc = ns.popen([sys.executable, "-c", _SERVER, proto, host, str(port)])
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise CommandFailed(f"echo server in {ns.name} did not start: {self._stderr()}")

    def _stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def echo(client: Netns, server: Netns, proto: str, host: str, port: int, payload: str) -> str:
    """Run an echo server in ``server`` and a client in ``client``; return the server's
    view of the client address (the peer IP it saw), checking the payload came back."""
    with EchoServer(server, proto, host, port):
        out = client.run([sys.executable, "-c", _CLIENT, proto, host, str(port), payload])
    peer, _, echoed = out.partition(" ")
    assert echoed == payload + "\n", f"echo over {proto} returned {out!r}"
    return peer


# --------------------------------------------------------------------------- topology

POD_SUBNET = "10.244.1.0/24"
POD_GATEWAY = "10.244.1.1"
UNDERLAY_PREFIX = 24
WORKER_UNDERLAY_IP = "192.0.2.1"
UNDERLAY_GATEWAY = "192.0.2.254"  # nobody answers; it only gives each side a default route


@dataclass(frozen=True, slots=True)
class PodSlot:
    """One pod: its netns on the worker (wired like a bridge CNI) and its pod VM namespace."""

    number: int
    pod: Netns  # the pod netns on the worker, ``eth0`` = pod IP
    vm: Netns  # plays the pod VM's root namespace, ``eth0`` = VM IP
    vm_podns: Netns  # the VM's pod netns (created by the code under test)

    @property
    def pod_ip(self) -> str:
        return f"10.244.1.{20 + self.number}"

    @property
    def vm_ip(self) -> str:
        return f"192.0.2.{10 + self.number}"


@dataclass(frozen=True, slots=True)
class WorkerTopology:
    worker: Netns  # plays the worker node's host namespace
    pods: tuple[PodSlot, ...]


def build_worker_topology(pool: NetnsPool, pods: int = 1) -> WorkerTopology:
    """A worker namespace with bridge ``cni0`` (pod gateway 10.244.1.1/24) and bridge
    ``uplink`` (192.0.2.1/24, default route); per pod, a pod netns on ``cni0`` with
    10.244.1.(20+n)/24 and a "pod VM" namespace on ``uplink`` with 192.0.2.(10+n)/24."""
    worker = pool.create("w")
    for bridge, address in (("cni0", f"{POD_GATEWAY}/24"), ("uplink", f"{WORKER_UNDERLAY_IP}/24")):
        worker.ip("link", "add", bridge, "type", "bridge")
        worker.ip("addr", "add", address, "dev", bridge)
        worker.ip("link", "set", bridge, "up")
    worker.ip("route", "add", "default", "via", UNDERLAY_GATEWAY, "dev", "uplink", "onlink")
    slots = []
    for n in range(1, pods + 1):
        pod = pool.create(f"p{n}")
        vm = pool.create(f"v{n}")
        slot = PodSlot(number=n, pod=pod, vm=vm, vm_podns=pool.adopt(f"v{n}pod"))
        veth(worker, f"vp{n}", pod, "eth0")
        worker.ip("link", "set", f"vp{n}", "master", "cni0", "up")
        pod.ip("addr", "add", f"{slot.pod_ip}/24", "dev", "eth0")
        pod.ip("link", "set", "eth0", "up")
        pod.ip("route", "add", "default", "via", POD_GATEWAY, "dev", "eth0")
        veth(worker, f"vu{n}", vm, "eth0")
        worker.ip("link", "set", f"vu{n}", "master", "uplink", "up")
        vm.ip("addr", "add", f"{slot.vm_ip}/24", "dev", "eth0")
        vm.ip("link", "set", "eth0", "up")
        vm.ip("route", "add", "default", "via", UNDERLAY_GATEWAY, "dev", "eth0", "onlink")
        slots.append(slot)
    return WorkerTopology(worker=worker, pods=tuple(slots))


@pytest.fixture
def netns_pool() -> Iterator[NetnsPool]:
    """A :class:`NetnsPool` whose namespaces are all deleted after the test."""
    pool = NetnsPool()
    try:
        yield pool
    finally:
        pool.close()
