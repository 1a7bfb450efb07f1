"""Worker side against real namespaces: what inspect reads, its errors, half-built cleanup."""

from __future__ import annotations

import json
from ipaddress import IPv4Address

import pytest

from adaptor.network import PodNetworkError, make_worker_network
from protocols.apf import ApfConfig, Neighbor, PodNetwork, Route, dumps
from tests.netns import POD_GATEWAY, NetnsPool, build_worker_topology, sh

pytestmark = [pytest.mark.root, pytest.mark.netns]


async def test_inspect_reads_the_pod_netns(netns_pool: NetnsPool) -> None:
    topo = build_worker_topology(netns_pool, pods=1)
    pod = topo.pods[0]
    pod.pod.ip("link", "set", "eth0", "mtu", "1400")
    pod.pod.ip("neigh", "add", "10.244.1.99", "lladdr", "02:00:00:00:00:99", "dev", "eth0",
               "nud", "permanent")  # fmt: skip
    pod.pod.ip("neigh", "add", "10.244.1.98", "lladdr", "02:00:00:00:00:98", "dev", "eth0",
               "nud", "reachable")  # fmt: skip
    pod.pod.ip("route", "add", "203.0.113.0/24", "via", POD_GATEWAY, "proto", "static")
    mac = json.loads(pod.pod.ip("-j", "link", "show", "eth0"))[0]["address"]

    wn = make_worker_network(
        "vxlan", vxlan_port=8472, vxlan_min_id=600, host_netns=topo.worker.path
    )
    network = await wn.inspect("sb", pod.pod.path)

    assert network.tunnel_type == "vxlan"
    assert network.interface == "eth0"
    assert network.pod_ip == f"{pod.pod_ip}/24"
    assert network.pod_hw_addr == mac
    assert network.mtu == 1400
    assert network.worker_node_ip == "192.0.2.1/24"
    assert network.dedicated is False
    assert (network.vxlan_id, network.vxlan_port, network.index) == (600, 8472, 0)
    assert network.routes == (
        Route(dst="0.0.0.0/0", gw=POD_GATEWAY, dev="eth0", protocol="boot"),
        Route(dst="10.244.1.0/24", dev="eth0", protocol="kernel", scope="link"),
        Route(dst="203.0.113.0/24", gw=POD_GATEWAY, dev="eth0", protocol="static"),
    )
    assert network.neighbors == (Neighbor("10.244.1.99", "02:00:00:00:00:99", "eth0", "permanent"),)
    # the same sandbox asking again keeps its id; another sandbox gets the next one
    assert (await wn.inspect("sb", pod.pod.path)).vxlan_id == 600
    assert (await wn.inspect("other", pod.pod.path)).vxlan_id == 601
    # and the result renders as apf.json
    assert '"vxlan-id": 600' in dumps(ApfConfig(pod_network=network))


async def test_dedicated_host_interface(netns_pool: NetnsPool) -> None:
    topo = build_worker_topology(netns_pool, pods=1)
    topo.worker.ip("link", "add", "tun0", "type", "bridge")
    topo.worker.ip("addr", "add", "198.51.100.7/25", "dev", "tun0")
    wn = make_worker_network("vxlan", host_interface="tun0", host_netns=topo.worker.path)
    network = await wn.inspect("sb", topo.pods[0].pod.path)
    assert network.worker_node_ip == "198.51.100.7/25"
    assert network.dedicated is True
    # a dedicated tunnel goes to the VM's second address
    with pytest.raises(PodNetworkError, match="has 1 IP address"):
        await wn.setup("sb", topo.pods[0].pod.path, network, [IPv4Address("192.0.2.11")])


async def test_no_default_route(netns_pool: NetnsPool) -> None:
    topo = build_worker_topology(netns_pool, pods=1)
    pod = topo.pods[0].pod
    pod.ip("route", "del", "default")
    wn = make_worker_network("vxlan", host_netns=topo.worker.path)
    with pytest.raises(
        PodNetworkError, match=f"no IPv4 or IPv6 default route in network namespace {pod.path}"
    ):
        await wn.inspect("sb", pod.path)
    # a failed inspect allocates nothing
    assert wn.allocator.in_use() == {}  # type: ignore[attr-defined]


async def test_two_ipv4_addresses(netns_pool: NetnsPool) -> None:
    topo = build_worker_topology(netns_pool, pods=1)
    pod = topo.pods[0].pod
    pod.ip("addr", "add", "10.244.1.77/24", "dev", "eth0")
    wn = make_worker_network("vxlan", host_netns=topo.worker.path)
    with pytest.raises(PodNetworkError) as info:
        await wn.inspect("sb", pod.path)
    text = str(info.value)
    assert f"pod interface eth0 in network namespace {pod.path}" in text
    assert "exactly one IPv4 address, found 2: 10.244.1.21/24, 10.244.1.77/24" in text


async def test_no_ipv4_address(netns_pool: NetnsPool) -> None:
    topo = build_worker_topology(netns_pool, pods=1)
    pod = topo.pods[0].pod
    pod.ip("addr", "flush", "dev", "eth0")  # drops the gateway route through eth0, too
    pod.ip("route", "add", "default", "dev", "eth0")
    wn = make_worker_network("vxlan", host_netns=topo.worker.path)
    with pytest.raises(PodNetworkError, match=r"pod interface eth0 .* found 0: none"):
        await wn.inspect("sb", pod.path)


async def test_missing_interface_and_namespace(netns_pool: NetnsPool) -> None:
    topo = build_worker_topology(netns_pool, pods=1)
    wn = make_worker_network("vxlan", host_interface="nosuch0", host_netns=topo.worker.path)
    with pytest.raises(
        PodNetworkError,
        match=f"interface nosuch0 not found in network namespace {topo.worker.path}",
    ):
        await wn.inspect("sb", topo.pods[0].pod.path)
    wn = make_worker_network("vxlan", host_netns=topo.worker.path)
    missing = netns_pool.adopt("never").path
    with pytest.raises(PodNetworkError, match=f"network namespace {missing} does not exist"):
        await wn.inspect("sb", missing)
    assert not netns_pool.adopt("never").exists()  # reading never creates a namespace
    network = await wn.inspect("sb", topo.pods[0].pod.path)
    with pytest.raises(PodNetworkError, match="does not exist"):
        await wn.setup("sb", missing, network, [IPv4Address("192.0.2.11")])


async def test_half_built_tunnel_is_removed(netns_pool: NetnsPool) -> None:
    topo = build_worker_topology(netns_pool, pods=1)
    pod = topo.pods[0].pod
    wn = make_worker_network("vxlan", host_netns=topo.worker.path)
    network = await wn.inspect("sb", pod.path)
    # the pod interface disappears between inspect and setup: fails after nothing was built
    pod.ip("link", "set", "eth0", "name", "eth9")
    with pytest.raises(PodNetworkError, match="interface eth0 not found"):
        await wn.setup("sb", pod.path, network, [IPv4Address("192.0.2.11")])
    pod.ip("link", "set", "eth9", "name", "eth0")
    # a foreign vxlan1 already exists in the pod netns: nothing of ours may be left behind
    pod.ip("link", "add", "vxlan1", "type", "bridge")
    with pytest.raises(PodNetworkError, match=r"vxlan1 already exists .* not this sandbox's"):
        await wn.setup("sb", pod.path, network, [IPv4Address("192.0.2.11")])
    assert "peerpod" not in topo.worker.run(["iptables", "-t", "raw", "-S"])
    assert "vxlan" not in topo.worker.ip("-d", "link", "show")
    assert "bridge" in pod.ip("-d", "link", "show", "vxlan1")  # the foreign device stays
    # teardown of a sandbox whose setup never happened touches nothing
    await wn.teardown("sb", pod.path, network)
    assert "bridge" in pod.ip("-d", "link", "show", "vxlan1")


async def test_setup_twice_then_teardown_after_the_pod_netns_is_gone(
    netns_pool: NetnsPool,
) -> None:
    topo = build_worker_topology(netns_pool, pods=1)
    slot = topo.pods[0]
    wn = make_worker_network("vxlan", host_netns=topo.worker.path)
    network = await wn.inspect("sb", slot.pod.path)
    await wn.setup("sb", slot.pod.path, network, [IPv4Address(slot.vm_ip)])
    await wn.setup("sb", slot.pod.path, network, [IPv4Address(slot.vm_ip)])  # a retried StartVM
    for dev, target in (("eth0", "vxlan1"), ("vxlan1", "eth0")):
        filters = slot.pod.run(["tc", "filter", "show", "dev", dev, "ingress"])
        assert filters.count("mirred") == 1, filters
        assert f"Egress Redirect to device {target})" in filters
    rules = topo.worker.run(["iptables", "-t", "raw", "-S"])
    assert rules.count("vni:555000") == 2 and rules.count("-j peerpod-OUTPUT") == 1
    sh(["ip", "netns", "delete", slot.pod.name])  # the pod is gone before StopVM
    await wn.teardown("sb", slot.pod.path, network)
    assert "peerpod" not in topo.worker.run(["iptables", "-t", "raw", "-S"])


async def test_no_tunnel(netns_pool: NetnsPool) -> None:
    topo = build_worker_topology(netns_pool, pods=1)
    wn = make_worker_network("none")
    network = await wn.inspect("sb", topo.pods[0].pod.path)
    assert network.tunnel_type == "none"
    assert network.pod_ip == "10.244.1.21/24" and network.vxlan_id == 0
    assert await wn.inspect("sb", "") == PodNetwork(tunnel_type="none")
    assert await wn.inspect("sb", netns_pool.adopt("gone").path) == PodNetwork(tunnel_type="none")
    await wn.setup("sb", topo.pods[0].pod.path, network, [IPv4Address("192.0.2.11")])
    await wn.teardown("sb", topo.pods[0].pod.path, network)
    assert "vxlan" not in topo.pods[0].pod.ip("-d", "link", "show")
    assert "peerpod" not in topo.worker.run(["iptables", "-t", "raw", "-S"])
