"""An IPv6-only pod through the real adaptor, the local provider's pod VM and the real
forwarder: the adaptor reads the pod's IPv6 address and routes at CreateVM, apf.json carries
them, the forwarder rebuilds them in the VM's pod netns, and traffic crosses the VXLAN
tunnel (IPv4 underlay, as upstream) both ways over IPv6."""

from __future__ import annotations

import secrets

import pytest

from protocols.apf import Route
from protocols.apf import loads as load_apf
from tests.e2e.harness import (
    Adaptor,
    Pod,
    Shim,
    WorkerNode,
    vm_pod_netns,
    vm_residue,
    worker_residue,
)
from tests.netns import echo

pytestmark = [pytest.mark.root, pytest.mark.netns]

GATEWAY6 = "fd00:10:244:1::1"
LINK_LOCAL_GATEWAY = "fe80::1"
REMOTE6 = "fd00:99::1"  # on the worker beyond the pod subnet: the pod's default route


def ipv6_only(worker: WorkerNode, pod: Pod) -> str:
    """Turn ``pod`` into an IPv6-only pod (default route via a link-local gateway, as
    Calico-style CNIs set it); return its address. ``nodad``: usable at once, as a CNI that
    waited for DAD leaves it."""
    for address in (f"{GATEWAY6}/64", f"{LINK_LOCAL_GATEWAY}/64"):
        worker.ns.ip("-6", "addr", "add", address, "dev", "cni0", "nodad")
    worker.ns.ip("-6", "addr", "add", f"{REMOTE6}/128", "dev", "lo")
    ip6 = f"fd00:10:244:1::{20 + pod.number}"
    pod.ns.ip("addr", "del", f"{pod.ip}/24", "dev", "eth0")
    pod.ns.ip("-6", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
    pod.ns.ip("-6", "route", "add", "default", "via", LINK_LOCAL_GATEWAY, "dev", "eth0")
    return ip6


async def test_ipv6_only_pod_end_to_end(worker: WorkerNode, adaptor: Adaptor) -> None:
    pod = worker.add_pod(1)
    ip6 = ipv6_only(worker, pod)
    links_before = worker.links()
    await adaptor.start()
    shim = Shim(adaptor.socket)
    sid = secrets.token_hex(32)
    await shim.create_vm(sid, pod)
    await shim.start_vm(sid)
    instance_id = await shim.instance_id(pod)
    apf = load_apf((adaptor.state_dir / instance_id / "run/peerpod/apf.json").read_text())
    assert apf.pod_network is not None
    assert apf.pod_network.pod_ip == f"{ip6}/64"
    assert Route(dst="::/0", gw=LINK_LOCAL_GATEWAY, dev="eth0", protocol="boot") in (
        apf.pod_network.routes
    )
    vm_pod = vm_pod_netns(instance_id)
    try:
        assert f"inet6 {ip6}/64 scope global" in vm_pod.ip("-6", "addr", "show", "dev", "eth0")
        for proto, port in (("tcp", 7800), ("udp", 7810)):
            assert echo(worker.ns, vm_pod, proto, ip6, port, "in") == GATEWAY6
            assert echo(vm_pod, worker.ns, proto, GATEWAY6, port + 1, "out") == ip6
            assert echo(vm_pod, worker.ns, proto, REMOTE6, port + 2, "far") == ip6
    except AssertionError:
        print(adaptor.vm_log(instance_id))
        raise

    await shim.stop_vm(sid)
    assert vm_residue(worker, adaptor, pod, instance_id, sid) == []
    assert worker_residue(worker, adaptor, links_before) == []
    assert await adaptor.stop() == 0
    assert "Traceback" not in adaptor.log(), adaptor.log_tail()
