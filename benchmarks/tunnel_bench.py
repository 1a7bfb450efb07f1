"""TCP throughput through the pod VXLAN tunnel vs. the same namespaces without it.

Run as root from the repository root:

    .venv/bin/python benchmarks/tunnel_bench.py [--mib 512] [--rounds 3]

It builds a worker namespace with one pod and one "pod VM" namespace (tests.netns), sets up
both ends of the tunnel with the project's code, then streams a fixed number of bytes from
the worker namespace with Python sockets (1) to the pod IP, served in the VM's pod netns
(through the tunnel) and (2) to the VM's own address (plain veth/bridge, no tunnel).
Prints the best MiB/s of each and their ratio. Every namespace is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import textwrap
from ipaddress import IPv4Address

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from adaptor.network import make_worker_network
from forwarder.podnetwork import setup_pod_network
from protocols.apf import ApfConfig, dumps, loads
from tests.netns import Netns, NetnsPool, build_worker_topology

RECEIVER = textwrap.dedent(
    """
    import socket, sys, time
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1)
    print("ready", flush=True)
    conn, _ = srv.accept()
    total, start, buf = 0, time.perf_counter(), bytearray(1 << 20)
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        total += n
    print(total, time.perf_counter() - start, flush=True)
    """
)

SENDER = textwrap.dedent(
    """
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
    chunk, remaining = b"x" * (1 << 20), int(sys.argv[3])
    while remaining > 0:
        s.sendall(chunk[: min(len(chunk), remaining)])
        remaining -= len(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
    """
)


def stream(sender: Netns, receiver: Netns, host: str, port: int, nbytes: int) -> float:
    """MiB/s of one transfer of ``nbytes`` from ``sender`` to ``receiver``."""
    rx = receiver.popen([sys.executable, "-c", RECEIVER, host, str(port)])
    assert rx.stdout is not None
    try:
        if rx.stdout.readline().strip() != "ready":
            raise RuntimeError("receiver did not start")
        sender.run([sys.executable, "-c", SENDER, host, str(port), str(nbytes)])
        total, seconds = rx.stdout.readline().split()
        if int(total) != nbytes:
            raise RuntimeError(f"received {total} of {nbytes} bytes")
        return nbytes / (1 << 20) / float(seconds)
    finally:
        if rx.poll() is None:
            rx.kill()
        rx.wait()
        rx.stdout.close()
        if rx.stderr:
            rx.stderr.close()


async def main(mib: int, rounds: int) -> None:
    pool = NetnsPool()
    try:
        topo = build_worker_topology(pool, pods=1)
        slot = topo.pods[0]
        wn = make_worker_network("vxlan", host_netns=topo.worker.path)
        network = await wn.inspect("bench", slot.pod.path)
        await wn.setup("bench", slot.pod.path, network, [IPv4Address(slot.vm_ip)])
        vm_view = loads(dumps(ApfConfig(pod_network=network))).pod_network
        assert vm_view is not None
        handle = await setup_pod_network(
            vm_view, pod_netns=slot.vm_podns.path, vm_netns=slot.vm.path, wait_timeout=5
        )
        nbytes = mib << 20
        tunnel, plain = [], []
        for r in range(rounds):
            tunnel.append(stream(topo.worker, slot.vm_podns, slot.pod_ip, 9000 + r, nbytes))
            plain.append(stream(topo.worker, slot.vm, slot.vm_ip, 9100 + r, nbytes))
        print(f"transfer size        {mib} MiB x {rounds} rounds (best of)")
        print(f"through the tunnel   {max(tunnel):8.1f} MiB/s   all: {fmt(tunnel)}")
        print(f"without the tunnel   {max(plain):8.1f} MiB/s   all: {fmt(plain)}")
        print(f"ratio tunnel/plain   {max(tunnel) / max(plain):8.2f}")
        await handle.teardown()
        await wn.teardown("bench", slot.pod.path, network)
    finally:
        pool.close()


def fmt(values: list[float]) -> str:
    return " ".join(f"{v:.0f}" for v in values)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="MiB per transfer")
    parser.add_argument("--rounds", type=int, default=3, help="transfers per path")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("tunnel_bench: must run as root (it creates network namespaces)")
    asyncio.run(main(args.mib, args.rounds))
