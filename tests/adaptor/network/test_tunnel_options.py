"""POD_SUBNET_CIDRS and EXTERNAL_NETWORK_VIA_PODVM across both ends of the tunnel, with real
traffic: the worker end writes them into apf.json, the pod VM end acts on them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest

from adaptor.network import make_worker_network, parse_pod_subnets
from adaptor.network.base import WorkerNetwork
from forwarder.podnetwork import PodNetworkHandle, setup_pod_network
from protocols.apf import PodNetwork, Route
from tests.adaptor.network.test_tunnel_e2e import tunnel_residue, via_apf_json
from tests.netns import (
    POD_GATEWAY,
    NetnsPool,
    PodSlot,
    WorkerTopology,
    build_worker_topology,
    echo,
    veth,
)

pytestmark = [pytest.mark.root, pytest.mark.netns]

SERVICE_IP = "10.96.0.10"  # in the extra pod subnet 10.96.0.0/12 (a service CIDR)
INTERNET_IP = "198.51.100.7"  # beyond every pod subnet: leaves through the default route
VM_GATEWAY = "192.0.2.254"  # the VMs' default gateway, here the worker itself


def serve_destinations(topo: WorkerTopology) -> None:
    """The worker answers for the service IP, the "internet" and the VMs' gateway."""
    topo.worker.ip("addr", "add", f"{VM_GATEWAY}/24", "dev", "uplink")
    for address in (SERVICE_IP, INTERNET_IP):
        topo.worker.ip("addr", "add", f"{address}/32", "dev", "lo")


def second_nic(topo: WorkerTopology, slot: PodSlot, address: str) -> None:
    """The VM's second NIC ``eth1`` in its primary's subnet, without a route of its own (an
    AWS ENI in the same subnet). ``arp_ignore=1``: on one shared segment, eth1 must not
    answer ARP for eth0's address (a cloud's fabric answers ARP itself)."""
    slot.vm.run(["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"])
    veth(topo.worker, f"vx{slot.number}", slot.vm, "eth1")
    topo.worker.ip("link", "set", f"vx{slot.number}", "master", "uplink", "up")
    slot.vm.ip("addr", "add", f"{address}/24", "dev", "eth1")
    slot.vm.ip("link", "set", "eth1", "up")


@asynccontextmanager
async def tunnel(
    wn: WorkerNetwork, slot: PodSlot, sid: str
) -> AsyncIterator[tuple[PodNetwork, PodNetworkHandle]]:
    network = await wn.inspect(sid, slot.pod.path)
    await wn.setup(sid, slot.pod.path, network, [IPv4Address(slot.vm_ip)])
    handle = await setup_pod_network(via_apf_json(network, sid), pod_netns=slot.vm_podns.path,
                                     vm_netns=slot.vm.path, wait_timeout=5)
    try:
        yield network, handle
    finally:
        await handle.teardown()
        await wn.teardown(sid, slot.pod.path, network)


async def test_extra_pod_subnet_takes_the_tunnel(netns_pool: NetnsPool) -> None:
    # Upstream: podnetwork/workernode.go, workerNode.Inspect appends "<cidr> via <pod
    # gateway> dev <pod interface>" to the routes of apf.json; podnetwork/podnode.go,
    # podNode.Setup adds every route of apf.json in the pod netns (gateway routes last).
    topo = build_worker_topology(netns_pool, pods=1)
    serve_destinations(topo)
    slot = topo.pods[0]
    # without the extra subnet, the pod has no route to the service IP beyond its default
    wn = make_worker_network("vxlan", host_netns=topo.worker.path,
                             pod_subnets=parse_pod_subnets(["10.96.0.0/12", " 10.244.1.0/24"]))
    async with tunnel(wn, slot, "sb") as (network, _):
        assert network.routes[-1] == Route(dst="10.96.0.0/12", gw=POD_GATEWAY, dev="eth0")
        # the pod's own subnet is routed already: not added twice (the VM would refuse it)
        assert [r.dst for r in network.routes].count("10.244.1.0/24") == 1
        routes = slot.vm_podns.ip("route", "show")
        assert f"10.96.0.0/12 via {POD_GATEWAY} dev eth0" in routes
        # a packet to the extra subnet leaves through the tunnel: the worker sees the pod IP
        assert echo(slot.vm_podns, topo.worker, "tcp", SERVICE_IP, 7300, "svc") == slot.pod_ip
        assert echo(slot.vm_podns, topo.worker, "udp", SERVICE_IP, 7301, "svc") == slot.pod_ip
    assert tunnel_residue(topo, slot, network.vxlan_id) == []


async def test_external_network_via_the_second_nic(netns_pool: NetnsPool) -> None:
    # Upstream: podnetwork/podnode.go, podNode.Setup calls setupExternalNetwork
    # (podnetwork/common.go): getSecondaryInterfaceDetails picks eth1 (an IPv4 address in
    # the primary's subnet, no default route: the primary's gateway is used), and
    # moveInterfaceToNamespace moves it into the pod netns, re-adds its address and replaces
    # the pod's default routes by one through it. POD_SUBNET_CIDRS keeps a subnet on the
    # tunnel (docs/external-network.md).
    topo = build_worker_topology(netns_pool, pods=1)
    serve_destinations(topo)
    slot = topo.pods[0]
    second_nic(topo, slot, "192.0.2.51")
    wn = make_worker_network("vxlan", host_netns=topo.worker.path, external_net_via_pod_vm=True,
                             pod_subnets=[IPv4Network("10.96.0.0/12")])
    async with tunnel(wn, slot, "sb") as (network, handle):
        assert network.external_net_via_pod_vm is True
        assert handle.external is not None and handle.external.name == "eth1"
        assert "eth1" not in slot.vm.ip("link", "show")
        assert "inet 192.0.2.51/24" in slot.vm_podns.ip("addr", "show", "eth1")
        routes = slot.vm_podns.ip("route", "show")
        assert f"default via {VM_GATEWAY} dev eth1" in routes
        assert f"default via {POD_GATEWAY}" not in routes
        for proto, port in (("tcp", 7400), ("udp", 7410)):
            # egress leaves through the VM's NIC with its address (no NAT)
            assert echo(slot.vm_podns, topo.worker, proto, INTERNET_IP, port, "x") == "192.0.2.51"
            # the pod subnet and the extra subnet stay on the tunnel
            assert echo(slot.vm_podns, topo.worker, proto, POD_GATEWAY, port + 1, "p") \
                == slot.pod_ip
            assert echo(slot.vm_podns, topo.worker, proto, SERVICE_IP, port + 2, "s") \
                == slot.pod_ip
            # and the worker still reaches the pod through the tunnel
            assert echo(topo.worker, slot.vm_podns, proto, slot.pod_ip, port + 3, "in") \
                == POD_GATEWAY
    # teardown gives the NIC back to the VM, address included
    assert "inet 192.0.2.51/24" in slot.vm.ip("addr", "show", "eth1")
    assert tunnel_residue(topo, slot, network.vxlan_id) == []


async def test_second_nic_with_its_own_default_route(netns_pool: NetnsPool) -> None:
    # Upstream: podnetwork/common.go, getSecondaryInterfaceDetails takes the first
    # non-primary interface with an IPv4 address and a default route of its own, skipping
    # names like veth*/tap*/br-*; without POD_SUBNET_CIDRS every non-pod-subnet address
    # leaves through it.
    topo = build_worker_topology(netns_pool, pods=1)
    serve_destinations(topo)
    slot = topo.pods[0]
    topo.worker.ip("link", "add", "extbr", "type", "bridge")
    topo.worker.ip("addr", "add", "203.0.113.1/24", "dev", "extbr")
    topo.worker.ip("link", "set", "extbr", "up")
    # a decoy that is filtered out by name although it has an address and a route
    slot.vm.ip("link", "add", "tap9", "type", "bridge")
    slot.vm.ip("addr", "add", "198.18.0.9/24", "dev", "tap9")
    slot.vm.ip("link", "set", "tap9", "up")
    slot.vm.ip("route", "add", "default", "dev", "tap9", "metric", "50")
    veth(topo.worker, "vx1", slot.vm, "eth1")
    topo.worker.ip("link", "set", "vx1", "master", "extbr", "up")
    slot.vm.ip("addr", "add", "203.0.113.12/24", "dev", "eth1")
    slot.vm.ip("link", "set", "eth1", "up")
    slot.vm.ip("route", "add", "default", "via", "203.0.113.1", "dev", "eth1", "metric", "100")
    wn = make_worker_network("vxlan", host_netns=topo.worker.path, external_net_via_pod_vm=True)
    async with tunnel(wn, slot, "sb") as (_, handle):
        assert handle.external is not None and handle.external.name == "eth1"
        assert "default via 203.0.113.1 dev eth1 metric 100" in slot.vm_podns.ip("route")
        assert echo(slot.vm_podns, topo.worker, "tcp", INTERNET_IP, 7500, "x") == "203.0.113.12"
        # no extra subnet: the service IP leaves through the NIC too
        assert echo(slot.vm_podns, topo.worker, "tcp", SERVICE_IP, 7501, "s") == "203.0.113.12"
        assert echo(slot.vm_podns, topo.worker, "tcp", POD_GATEWAY, 7502, "p") == slot.pod_ip
    # back in the VM with its own default route
    assert "default via 203.0.113.1 dev eth1 metric 100" in slot.vm.ip("route")


async def test_no_second_nic_keeps_the_tunnel_default(netns_pool: NetnsPool) -> None:
    # Upstream: podnetwork/podnode.go, podNode.Setup only logs "failed to set up external
    # network" (ErrNoSecondaryInterface) and the pod keeps its default route.
    topo = build_worker_topology(netns_pool, pods=1)
    slot = topo.pods[0]
    wn = make_worker_network("vxlan", host_netns=topo.worker.path, external_net_via_pod_vm=True)
    async with tunnel(wn, slot, "sb") as (_, handle):
        assert handle.external is None
        assert f"default via {POD_GATEWAY} dev eth0" in slot.vm_podns.ip("route")
        assert echo(slot.vm_podns, topo.worker, "tcp", POD_GATEWAY, 7600, "p") == slot.pod_ip


@pytest.mark.parametrize(
    ("cidrs", "problem"),
    [(["10.96.0.0/33"], "is not a CIDR"), (["10.96.0.1/12"], "is not a CIDR"),
     (["fd00::1/64"], "is not a CIDR")],
)
def test_bad_pod_subnet_cidrs(cidrs: list[str], problem: str) -> None:
    # Upstream (workerNode.Inspect) logs and skips what netip.ParsePrefix rejects at every
    # CreateVM, and a prefix with host bits makes the pod VM's route add fail; refused here.
    with pytest.raises(ValueError, match=f"^POD_SUBNET_CIDRS: .* {problem}"):
        parse_pod_subnets(cidrs)
    assert parse_pod_subnets(["", "10.96.0.0/12", ""]) == (IPv4Network("10.96.0.0/12"),)
    # IPv6 subnets are taken (a pod gets those of its own address family)
    assert parse_pod_subnets(["fd00:96::/112"]) == (IPv6Network("fd00:96::/112"),)
