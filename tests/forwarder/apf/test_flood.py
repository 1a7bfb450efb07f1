"""A connection flood from the VPC does not lock the adaptor out of the forwarder.

The forwarder runs as a real process in a "pod VM" namespace, listening on 0.0.0.0:15150
with the default soft open-file limit of 1024. An "attacker" namespace keeps 2000 idle TCP
connections open from 40 addresses, reopening each one the forwarder drops. Meanwhile the
adaptor's dialer, from a third namespace, completes mutual TLS and gets Check answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from forwarder.apf.listener import AdmissionLimits
from tests.forwarder.apf.helpers import SERVER_NAME, FakeAgent, Pki
from tests.netns import Netns, NetnsPool, veth

pytestmark = [pytest.mark.root, pytest.mark.netns]

PORT = 15150
VM_FOR_ATTACKER, ATTACKER_NET = "10.99.0.1", "10.99.0"
VM_FOR_ADAPTOR, ADAPTOR_IP = "10.99.1.1", "10.99.1.2"
SOURCES = 40
CONNECTIONS = 2000
REPO = Path(__file__).resolve().parents[3]

_FLOOD = textwrap.dedent(
    """
    import selectors, socket, sys
    target, sources, count = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    sel = selectors.DefaultSelector()
    def opened(i):
        s = socket.socket()
        s.bind((sources[i % len(sources)], 0))
        s.setblocking(False)
        s.connect_ex((target, 15150))
        sel.register(s, selectors.EVENT_READ, i)
    for i in range(count):
        opened(i)
    print("ready", flush=True)
    reopened = 0
    while True:  # whatever the forwarder closes comes back at once
        for key, _ in sel.select(timeout=1):
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                opened(key.data)
                reopened += 1
    """
)

_ADAPTOR = textwrap.dedent(
    """
    import asyncio, sys
    from adaptor.proxy.dialer import ForwarderDialer
    from protocols.kata import health_pb2
    from runtime.tlsprofile import client_context
    host, name, cert, key, ca = sys.argv[1:6]
    async def main():
        context = client_context(open(cert).read(), open(key).read(), open(ca).read())
        dialer = ForwarderDialer("flood-test", host, 15150, context, name)
        async with await dialer.connect_once(timeout=10) as client:
            resp = await client.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                     health_pb2.HealthCheckResponse, timeout=10)
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
    asyncio.run(main())
    """
)


@dataclass(frozen=True, slots=True)
class Topology:
    vm: Netns
    attacker: Netns
    adaptor: Netns


@pytest.fixture
def topology() -> Iterator[Topology]:
    pool = NetnsPool()
    try:
        vm, attacker, adaptor = pool.create("vm"), pool.create("atk"), pool.create("adm")
        veth(vm, "eth0", attacker, "eth0")
        veth(vm, "eth1", adaptor, "eth0")
        vm.ip("addr", "add", f"{VM_FOR_ATTACKER}/24", "dev", "eth0")
        vm.ip("addr", "add", f"{VM_FOR_ADAPTOR}/24", "dev", "eth1")
        for n in range(SOURCES):
            attacker.ip("addr", "add", f"{ATTACKER_NET}.{10 + n}/24", "dev", "eth0")
        adaptor.ip("addr", "add", f"{ADAPTOR_IP}/24", "dev", "eth0")
        for ns in (vm, attacker, adaptor):
            for dev in ("eth0", "eth1") if ns is vm else ("eth0",):
                ns.ip("link", "set", dev, "up")
        yield Topology(vm, attacker, adaptor)
    finally:
        pool.close()


def _soft_nofile_1024() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


def _forwarder_command() -> list[str]:
    script = shutil.which("agent-protocol-forwarder", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "forwarder.apf_main"]


@pytest.fixture
async def forwarder(
    topology: Topology, pki: Pki, agent: FakeAgent, tmp_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    config = tmp_path / "apf.json"
    config.write_text(pki.apf_json())
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": notify_path}
    log = (tmp_path / "forwarder.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", topology.vm.name, *_forwarder_command(),
        "-config", str(config), "-listen", f"0.0.0.0:{PORT}",
        "-kata-agent-socket", agent.path, "-pod-namespace", "/run/netns/podns-flood",
        stdout=log, stderr=log, env=env, preexec_fn=_soft_nofile_1024)
    try:
        loop = asyncio.get_running_loop()
        ready = await asyncio.wait_for(loop.sock_recv(notify, 4096), 30)
        assert ready.startswith(b"READY=1"), ready
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        notify.close()
        log.close()


@pytest.fixture
def flood(topology: Topology) -> Iterator[subprocess.Popen[str]]:
    sources = ",".join(f"{ATTACKER_NET}.{10 + n}" for n in range(SOURCES))
    proc = topology.attacker.popen(
        [sys.executable, "-c", _FLOOD, VM_FOR_ATTACKER, sources, str(CONNECTIONS)])
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr and proc.stderr.read()
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _held(pid: int) -> int:
    """TCP and unix sockets the forwarder process holds open: its listener, the connections
    it accepted, and its agent connections. Read from the process itself, so connections
    still waiting in the kernel's listen queue do not count."""
    fd_dir = Path(f"/proc/{pid}/fd")
    held = 0
    for fd in fd_dir.iterdir():
        with contextlib.suppress(FileNotFoundError):
            held += os.readlink(fd).startswith("socket:")
    return held


def _adaptor_check(topology: Topology, pki: Pki, tmp_path: Path) -> str:
    files = {"cert": pki.client.cert_pem, "key": pki.client.key_pem, "ca": pki.ca.cert_pem}
    for name, pem in files.items():
        (tmp_path / f"client-{name}.pem").write_text(pem)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        ["ip", "netns", "exec", topology.adaptor.name, sys.executable, "-c", _ADAPTOR,
         VM_FOR_ADAPTOR, SERVER_NAME, *(str(tmp_path / f"client-{n}.pem") for n in files)],
        capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_authenticated_client_is_served_during_a_flood(
    topology: Topology, forwarder: asyncio.subprocess.Process,
    flood: subprocess.Popen[str], pki: Pki, agent: FakeAgent, tmp_path: Path,
) -> None:
    for _ in range(3):
        status = await asyncio.to_thread(_adaptor_check, topology, pki, tmp_path)
        assert status == "SERVING"
    # What the forwarder holds is bounded by the cap on unauthenticated connections.
    held = max([await asyncio.to_thread(_held, forwarder.pid) for _ in range(5)])
    assert held <= AdmissionLimits().total + 8, held
    assert flood.poll() is None  # the attacker was still at it
    assert forwarder.returncode is None
    assert len(agent.calls("Check")) == 3
    text = (tmp_path / "forwarder.log").read_text()
    assert "raised the open-file limit from 1024" in text
    assert "unauthenticated connections over the limits" in text
    assert "Traceback" not in text
