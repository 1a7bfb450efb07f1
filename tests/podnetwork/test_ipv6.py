"""IPv6 pod networks across both ends of the tunnel, in real namespaces with real traffic.

The worker reads the pod netns a CNI wired (veth, addresses, default routes), apf.json
carries the result to the pod VM, the pod VM end rebuilds the pod's interface in its own pod
netns, and traffic crosses the VXLAN tunnel (over an IPv4 underlay, as upstream) both ways.
Addresses are added with ``nodad``, as a CNI that waited for DAD leaves them: usable at once.

- IPv6-only pod: the one global IPv6 address is the pod address (``podip``), its IPv6
  routes and neighbours go along; default route via a link-local or a global gateway.
- Dual-stack pod: apf.json has room for one pod address; as upstream it is the IPv4 one, and
  the IPv6 side of the pod stays on the worker (a warning says so).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest

from adaptor.network import make_worker_network, parse_pod_subnets
from adaptor.network.base import WorkerNetwork
from forwarder.podnetwork import PodNetworkHandle, setup_pod_network
from podnetwork.errors import PodNetworkError
from protocols.apf import ApfConfig, Neighbor, PodNetwork, Route, dumps
from tests.adaptor.network.test_tunnel_e2e import tunnel_residue, via_apf_json
from tests.netns import (
    POD_GATEWAY,
    NetnsPool,
    PodSlot,
    WorkerTopology,
    build_worker_topology,
    echo,
)

pytestmark = [pytest.mark.root, pytest.mark.netns]

POD6_GATEWAY = "fd00:10:244:1::1"  # the worker's address on cni0
LINK_LOCAL_GATEWAY = "fe80::1"  # also on cni0, as Calico/Cilium-style CNIs route
POD6_NETWORK = "fd00:10:244:1::/64"
REMOTE6 = "fd00:99::1"  # on the worker beyond the pod subnet: reached by the default route
SERVICE6_NETWORK = "fd00:96::/112"  # an extra pod subnet (POD_SUBNET_CIDRS)
SERVICE6 = "fd00:96::10"
STATIC_NEIGHBOR = "fd00:10:244:1::99"  # a permanent neighbour entry, as some CNIs add
STATIC_MAC = "02:00:00:00:00:99"


def pod6_ip(slot: PodSlot) -> str:
    return f"fd00:10:244:1::{20 + slot.number}"


@dataclass(frozen=True, slots=True)
class Pod6:
    topo: WorkerTopology
    slot: PodSlot
    ip: str  # the pod's IPv6 address (no prefix)


def ipv6_pod(pool: NetnsPool, *, gateway: str, keep_ipv4: bool) -> Pod6:
    """The usual worker topology plus IPv6 on ``cni0`` and in the pod: the pod's global
    address, and its IPv6 default route through ``gateway``. Without ``keep_ipv4``, the
    pod's IPv4 address (and with it its IPv4 routes) goes: an IPv6-only pod."""
    topo = build_worker_topology(pool, pods=1)
    slot = topo.pods[0]
    for address in (f"{POD6_GATEWAY}/64", f"{LINK_LOCAL_GATEWAY}/64"):
        topo.worker.ip("-6", "addr", "add", address, "dev", "cni0", "nodad")
    for address in (REMOTE6, SERVICE6):
        topo.worker.ip("-6", "addr", "add", f"{address}/128", "dev", "lo")
    ip = pod6_ip(slot)
    slot.pod.ip("-6", "addr", "add", f"{ip}/64", "dev", "eth0", "nodad")
    slot.pod.ip("-6", "route", "add", "default", "via", gateway, "dev", "eth0")
    if not keep_ipv4:
        slot.pod.ip("addr", "del", f"{slot.pod_ip}/24", "dev", "eth0")
        assert "inet " not in slot.pod.ip("addr", "show", "dev", "eth0")
    return Pod6(topo, slot, ip)


@asynccontextmanager
async def tunnel(
    wn: WorkerNetwork, slot: PodSlot, sid: str
) -> AsyncIterator[tuple[PodNetwork, PodNetworkHandle]]:
    network = await wn.inspect(sid, slot.pod.path)
    await wn.setup(sid, slot.pod.path, network, [IPv4Address(slot.vm_ip)])
    handle = await setup_pod_network(
        via_apf_json(network, sid), pod_netns=slot.vm_podns.path, vm_netns=slot.vm.path,
        wait_timeout=5,
    )  # fmt: skip
    try:
        yield network, handle
    finally:
        await handle.teardown()
        await wn.teardown(sid, slot.pod.path, network)
        wn.release(sid)


def pod_network_json(network: PodNetwork) -> dict[str, object]:
    text = dumps(ApfConfig(pod_network=network, pod_namespace="default", pod_name="p"))
    document = json.loads(text)
    assert isinstance(document["pod-network"], dict)
    return document["pod-network"]


def assert_ipv6_traffic(pod: Pod6, port: int) -> None:
    worker, vm_podns = pod.topo.worker, pod.slot.vm_podns
    for proto in ("tcp", "udp"):
        # the worker (on cni0) -> the pod's IPv6 address, served in the VM's pod netns
        assert echo(worker, vm_podns, proto, pod.ip, port, "in") == POD6_GATEWAY
        # the pod in the VM -> the worker in its own subnet, then beyond it (default route)
        assert echo(vm_podns, worker, proto, POD6_GATEWAY, port + 1, "out") == pod.ip
        assert echo(vm_podns, worker, proto, REMOTE6, port + 2, "far") == pod.ip


@pytest.mark.parametrize(
    ("gateway", "port"), [(LINK_LOCAL_GATEWAY, 7700), (POD6_GATEWAY, 7720)],
    ids=["link-local-gateway", "global-gateway"],
)  # fmt: skip
async def test_ipv6_only_pod(netns_pool: NetnsPool, gateway: str, port: int) -> None:
    pod = ipv6_pod(netns_pool, gateway=gateway, keep_ipv4=False)
    slot = pod.slot
    slot.pod.ip("-6", "neigh", "add", STATIC_NEIGHBOR, "lladdr", STATIC_MAC, "dev", "eth0",
                "nud", "permanent")  # fmt: skip
    wn = make_worker_network("vxlan", host_netns=pod.topo.worker.path)
    async with tunnel(wn, slot, "sb6") as (network, _):
        # what the worker read: the IPv6 address and IPv6 routes, the IPv4 underlay
        assert network.pod_ip == f"{pod.ip}/64"
        assert network.interface == "eth0"
        assert network.worker_node_ip == "192.0.2.1/24"
        assert Route(dst=POD6_NETWORK, dev="eth0", protocol="kernel") in network.routes
        assert Route(dst="::/0", gw=gateway, dev="eth0", protocol="boot") in network.routes
        assert not [r for r in network.routes if r.dst.startswith("fe80:")]
        assert network.neighbors == (
            Neighbor(ip=STATIC_NEIGHBOR, hw_addr=STATIC_MAC, dev="eth0", state="permanent"),
        )
        # apf.json, as the pod VM reads it
        document = pod_network_json(network)
        assert document["podip"] == f"{pod.ip}/64"
        assert document["worker-node-ip"] == "192.0.2.1/24"
        assert {"dst": "::/0", "gw": gateway, "dev": "eth0", "protocol": "boot"} in document[
            "routes"
        ]
        # the pod VM end: the pod's address (usable at once), MAC and routes
        details = slot.vm_podns.ip("-d", "-6", "addr", "show", "dev", "eth0")
        assert f"inet6 {pod.ip}/64 scope global nodad \n" in details
        assert network.pod_hw_addr in details
        routes = slot.vm_podns.ip("-6", "route", "show")
        assert f"default via {gateway} dev eth0" in routes
        # the kernel's prefix route was dropped and the one read on the worker put back:
        # one prefix route, one link-local route (the kernel's), nothing twice
        assert routes.count(f"{POD6_NETWORK} dev eth0") == 1
        assert routes.count("fe80::/64 dev eth0") == 1
        assert "inet " not in slot.vm_podns.ip("addr", "show", "dev", "eth0")
        neighbors = slot.vm_podns.ip("-6", "neigh", "show", "dev", "eth0")
        assert f"{STATIC_NEIGHBOR} lladdr {STATIC_MAC} PERMANENT" in neighbors
        assert_ipv6_traffic(pod, port)
    assert tunnel_residue(pod.topo, slot, network.vxlan_id) == []
    # the pod's own CNI wiring on the worker is untouched
    assert f"inet6 {pod.ip}/64" in slot.pod.ip("-6", "addr", "show", "dev", "eth0")


async def test_ipv6_only_pod_with_an_extra_ipv6_subnet(netns_pool: NetnsPool) -> None:
    # POD_SUBNET_CIDRS of both families: an IPv6-only pod gets the IPv6 ones, through its
    # IPv6 gateway; the IPv4 one has no gateway (or address) in this pod and is left out.
    pod = ipv6_pod(netns_pool, gateway=LINK_LOCAL_GATEWAY, keep_ipv4=False)
    subnets = parse_pod_subnets([SERVICE6_NETWORK, "10.96.0.0/12"])
    wn = make_worker_network("vxlan", host_netns=pod.topo.worker.path, pod_subnets=subnets)
    async with tunnel(wn, pod.slot, "sb6") as (network, _):
        assert network.routes[-1] == Route(dst=SERVICE6_NETWORK, gw=LINK_LOCAL_GATEWAY, dev="eth0")
        assert not [r for r in network.routes if r.dst == "10.96.0.0/12"]
        route = pod.slot.vm_podns.ip("-6", "route", "get", SERVICE6)
        assert f"via {LINK_LOCAL_GATEWAY} dev eth0" in route
        assert echo(pod.slot.vm_podns, pod.topo.worker, "tcp", SERVICE6, 7740, "svc") == pod.ip


async def test_dual_stack_pod_carries_its_ipv4_side(
    netns_pool: NetnsPool, caplog: pytest.LogCaptureFixture
) -> None:
    pod = ipv6_pod(netns_pool, gateway=LINK_LOCAL_GATEWAY, keep_ipv4=True)
    slot = pod.slot
    subnets = parse_pod_subnets([SERVICE6_NETWORK, "10.96.0.0/12"])
    wn = make_worker_network("vxlan", host_netns=pod.topo.worker.path, pod_subnets=subnets)
    with caplog.at_level(logging.WARNING, logger="adaptor.network.vxlan"):
        async with tunnel(wn, slot, "sb46") as (network, _):
            # upstream's rule: the one IPv4 address is the pod address, IPv4 routes only
            assert network.pod_ip == f"{slot.pod_ip}/24"
            assert Route(dst="0.0.0.0/0", gw=POD_GATEWAY, dev="eth0", protocol="boot") in (
                network.routes
            )
            assert all(":" not in r.dst + r.gw for r in network.routes)
            assert network.routes[-1] == Route(dst="10.96.0.0/12", gw=POD_GATEWAY, dev="eth0")
            assert pod_network_json(network)["podip"] == f"{slot.pod_ip}/24"
            # the pod VM has the IPv4 side, and no global IPv6 address
            assert f"inet {slot.pod_ip}/24" in slot.vm_podns.ip("addr", "show", "dev", "eth0")
            assert slot.vm_podns.ip("-6", "addr", "show", "scope", "global").strip() == ""
            for proto, port in (("tcp", 7760), ("udp", 7762)):
                assert echo(pod.topo.worker, slot.vm_podns, proto, slot.pod_ip, port, "in") == (
                    POD_GATEWAY
                )
                assert echo(slot.vm_podns, pod.topo.worker, proto, POD_GATEWAY, port + 1, "o") == (
                    slot.pod_ip
                )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        f"sandbox=sb46: dual-stack pod: only {slot.pod_ip}/24 reaches the pod VM;"
        f" {pod.ip}/64 not carried"
    ) in warnings
    assert tunnel_residue(pod.topo, slot, network.vxlan_id) == []


async def test_two_global_ipv6_addresses_are_refused(netns_pool: NetnsPool) -> None:
    pod = ipv6_pod(netns_pool, gateway=LINK_LOCAL_GATEWAY, keep_ipv4=False)
    pod.slot.pod.ip("-6", "addr", "add", "fd00:10:244:1::77/64", "dev", "eth0", "nodad")
    wn = make_worker_network("vxlan", host_netns=pod.topo.worker.path)
    with pytest.raises(PodNetworkError) as info:
        await wn.inspect("sb", pod.slot.pod.path)
    text = str(info.value)
    assert f"pod interface eth0 in network namespace {pod.slot.pod.path}" in text
    assert "exactly one global IPv6 address, found 2:" in text
    assert f"{pod.ip}/64" in text and "fd00:10:244:1::77/64" in text
    assert wn.allocator.in_use() == {}  # type: ignore[attr-defined]
