"""Pod VM side against real namespaces: the pod interface, routes, neighbours, cleanup."""

from __future__ import annotations

import dataclasses
import json

import pytest

from forwarder.podnetwork import PodNetworkError, setup_pod_network
from protocols.apf import Neighbor, PodNetwork, Route
from tests.netns import Netns, NetnsPool, veth

pytestmark = [pytest.mark.root, pytest.mark.netns]

FLANNEL_STYLE = PodNetwork(
    tunnel_type="vxlan",
    pod_ip="10.244.1.21/24",
    pod_hw_addr="32:b9:59:6b:f0:d5",
    interface="eth0",
    worker_node_ip="192.0.2.1/24",
    routes=(
        Route(dst="0.0.0.0/0", gw="10.244.1.1", dev="eth0", protocol="boot"),
        Route(dst="10.244.1.0/24", dev="eth0", protocol="kernel", scope="link"),
    ),
    mtu=1500,
    vxlan_port=8472,
    vxlan_id=555002,
)

CALICO_STYLE = PodNetwork(
    tunnel_type="vxlan",
    pod_ip="10.244.7.5/32",
    pod_hw_addr="02:00:00:00:07:05",
    interface="eth0",
    worker_node_ip="192.0.2.1/24",
    # the gateway route comes first here; the on-link route must still be added before it
    routes=(
        Route(dst="0.0.0.0/0", gw="169.254.1.1", dev="eth0", protocol="boot"),
        Route(dst="169.254.1.1/32", dev="eth0", protocol="boot", scope="link"),
    ),
    neighbors=(Neighbor("169.254.1.1", "ee:ee:ee:ee:ee:ee", "eth0", "permanent"),),
    mtu=1440,
    vxlan_port=4789,
    vxlan_id=555007,
)


def make_vm(pool: NetnsPool, *, default_route: bool = True) -> Netns:
    """A namespace playing a pod VM: eth0 192.0.2.11/24 (a veth to a peer namespace)."""
    vm = pool.create("vm")
    peer = pool.create("peer")
    veth(vm, "eth0", peer, "eth0")
    vm.ip("addr", "add", "192.0.2.11/24", "dev", "eth0")
    vm.ip("link", "set", "eth0", "up")
    if default_route:
        vm.ip("route", "add", "default", "via", "192.0.2.254", "dev", "eth0", "onlink")
    return vm


def routes_of(ns: Netns) -> set[tuple[str, str, str, str, str]]:
    """(dst, gateway, dev, protocol, scope) of every IPv4 main-table route."""
    return {
        (r["dst"], r.get("gateway", ""), r["dev"], r.get("protocol", "boot"), r["scope"])
        for r in json.loads(ns.ip("-j", "-d", "route", "show"))
    }


async def test_flannel_style_pod_network(netns_pool: NetnsPool) -> None:
    vm = make_vm(netns_pool)
    podns = netns_pool.adopt("podns")
    handle = await setup_pod_network(
        FLANNEL_STYLE, pod_netns=podns.path, vm_netns=vm.path, wait_timeout=5
    )
    assert handle.active
    # the pod netns was created, with lo up
    assert "UP" in podns.ip("link", "show", "lo").split(">")[0]
    link = json.loads(podns.ip("-j", "-d", "addr", "show", "eth0"))[0]
    assert link["address"] == "32:b9:59:6b:f0:d5"
    assert link["mtu"] == 1450  # min(1500, 1450)
    info = link["linkinfo"]
    assert info["info_kind"] == "vxlan"
    assert info["info_data"]["id"] == 555002
    assert info["info_data"]["remote"] == "192.0.2.1"
    assert info["info_data"]["port"] == 8472
    assert [(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"] == [
        ("10.244.1.21", 24)
    ]
    assert routes_of(podns) == {
        ("default", "10.244.1.1", "eth0", "boot", "global"),
        ("10.244.1.0/24", "", "eth0", "kernel", "link"),
    }
    rules = vm.run(["iptables", "-t", "raw", "-S"])
    assert (
        '-A peerpod-OUTPUT -d 192.0.2.1/32 -p udp -m comment --comment "peerpod [vni:555002]"'
        " -m udp --dport 8472 -j NOTRACK" in rules
    )
    assert "-A peerpod-PREROUTING -s 192.0.2.1/32" in rules
    assert "-A OUTPUT -j peerpod-OUTPUT" in rules and "-A PREROUTING -j peerpod-PREROUTING" in rules
    assert "vxlan" not in vm.ip("-d", "link", "show")  # vxlan0 was moved out of the VM ns

    await handle.teardown()
    assert "eth0" not in podns.ip("link", "show")
    assert "peerpod" not in vm.run(["iptables", "-t", "raw", "-S"])
    assert podns.exists()  # containers may still live in it
    await handle.teardown()  # twice is fine


async def test_calico_style_slash_32_with_onlink_gateway(netns_pool: NetnsPool) -> None:
    vm = make_vm(netns_pool)
    podns = netns_pool.create("podns")  # exists already, as netns@podns.service makes it
    handle = await setup_pod_network(
        CALICO_STYLE, pod_netns=podns.path, vm_netns=vm.path, wait_timeout=5
    )
    assert routes_of(podns) == {
        ("default", "169.254.1.1", "eth0", "boot", "global"),
        ("169.254.1.1", "", "eth0", "boot", "link"),
    }
    assert "ee:ee:ee:ee:ee:ee PERMANENT" in podns.ip("neigh", "show", "dev", "eth0")
    assert json.loads(podns.ip("-j", "link", "show", "eth0"))[0]["mtu"] == 1440
    await handle.teardown()


async def test_existing_interface_from_an_earlier_run_is_replaced(netns_pool: NetnsPool) -> None:
    vm = make_vm(netns_pool)
    podns = netns_pool.adopt("podns")
    await setup_pod_network(FLANNEL_STYLE, pod_netns=podns.path, vm_netns=vm.path)
    # the forwarder restarts without having torn down: setting up again works
    handle = await setup_pod_network(FLANNEL_STYLE, pod_netns=podns.path, vm_netns=vm.path)
    assert podns.ip("-d", "link", "show", "eth0").count("vxlan id 555002") == 1
    await handle.teardown()


async def test_no_tunnel_builds_nothing(netns_pool: NetnsPool) -> None:
    vm = make_vm(netns_pool)
    podns = netns_pool.adopt("podns")
    handle = await setup_pod_network(
        PodNetwork(tunnel_type="none"), pod_netns=podns.path, vm_netns=vm.path
    )
    assert not handle.active
    assert not podns.exists()
    await handle.teardown()


async def test_waits_for_the_primary_interface_then_times_out(netns_pool: NetnsPool) -> None:
    vm = make_vm(netns_pool, default_route=False)
    podns = netns_pool.adopt("podns")
    with pytest.raises(PodNetworkError, match=r"timed out after 0.3s: no IPv4 default route"):
        await setup_pod_network(
            FLANNEL_STYLE, pod_netns=podns.path, vm_netns=vm.path, wait_timeout=0.3
        )
    assert not podns.exists()


async def test_dedicated_interface_must_differ(netns_pool: NetnsPool) -> None:
    vm = make_vm(netns_pool)
    dedicated = dataclasses.replace(FLANNEL_STYLE, dedicated=True)
    with pytest.raises(PodNetworkError, match="eth0 is not a dedicated interface"):
        await setup_pod_network(
            dedicated,
            pod_netns=netns_pool.adopt("podns").path,
            vm_netns=vm.path,
            host_interface="eth0",
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"interface": ""}, "interface is not specified"),
        ({"pod_ip": ""}, "podip is not specified"),
        ({"worker_node_ip": ""}, "worker-node-ip is not specified"),
        ({"vxlan_id": 0}, "vxlan-id and vxlan-port are required"),
        ({"tunnel_type": "gre"}, "unknown tunnel type: 'gre'"),
    ],
)
async def test_incomplete_config(change: dict[str, object], message: str) -> None:
    with pytest.raises(PodNetworkError, match=message):
        await setup_pod_network(
            dataclasses.replace(FLANNEL_STYLE, **change),  # type: ignore[arg-type]
            pod_netns="/nonexistent/podns",
            vm_netns="/nonexistent/vm",
        )


async def test_failure_removes_the_half_built_network(netns_pool: NetnsPool) -> None:
    vm = make_vm(netns_pool)
    podns = netns_pool.adopt("podns")
    broken = dataclasses.replace(
        FLANNEL_STYLE,
        routes=(*FLANNEL_STYLE.routes, Route(dst="203.0.113.0/24", gw="198.51.100.1", dev="eth0")),
    )
    with pytest.raises(
        PodNetworkError, match=r"failed to add route 203\.0\.113\.0/24 via 198\.51\.100\.1"
    ):
        await setup_pod_network(broken, pod_netns=podns.path, vm_netns=vm.path)
    assert not podns.exists()  # it was created by this call, so it went again
    assert "vxlan" not in vm.ip("-d", "link", "show")
    assert "peerpod" not in vm.run(["iptables", "-t", "raw", "-S"])


async def test_a_failed_teardown_is_reported_and_finished_by_the_next(
    netns_pool: NetnsPool,
) -> None:
    vm = make_vm(netns_pool)
    podns = netns_pool.adopt("podns")
    handle = await setup_pod_network(FLANNEL_STYLE, pod_netns=podns.path, vm_netns=vm.path)
    foreign_jump = ["OUTPUT", "-p", "tcp", "-j", "peerpod-OUTPUT"]  # keeps the chain busy
    vm.run(["iptables", "-t", "raw", "-A", *foreign_jump])
    with pytest.raises(PodNetworkError, match=r"-X peerpod-OUTPUT .*Device or resource busy"):
        await handle.teardown()
    assert "eth0" not in podns.ip("link", "show")  # the other parts went all the same
    assert "-N peerpod-OUTPUT" in vm.run(["iptables", "-t", "raw", "-S"])
    vm.run(["iptables", "-t", "raw", "-D", *foreign_jump])
    await handle.teardown()
    assert "peerpod" not in vm.run(["iptables", "-t", "raw", "-S"])
