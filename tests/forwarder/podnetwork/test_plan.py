"""The pod VM end's plan: pure, computed from apf.json's pod-network and one observed fact."""

from __future__ import annotations

import dataclasses
import socket
from ipaddress import IPv4Address, ip_interface

import pytest

from forwarder.podnetwork.apply import removals, setup_steps
from forwarder.podnetwork.plan import PlannedNeighbor, PlannedRoute, PodLink, plan_pod_network
from podnetwork.errors import PodNetworkError
from podnetwork.plan import NotrackRules, VxlanDevice
from protocols.apf import Neighbor, Route
from tests.forwarder.podnetwork.test_pod_network import CALICO_STYLE, FLANNEL_STYLE

PODNS = "/run/netns/podns"


def test_flannel_style_plan() -> None:
    plan = plan_pod_network(FLANNEL_STYLE, pod_netns=PODNS, vm_netns=None, netns_exists=False)
    worker = IPv4Address("192.0.2.1")
    assert plan.create_netns
    assert plan.notrack == NotrackRules(None, worker, 8472, 555002)
    assert plan.vxlan == VxlanDevice(None, "vxlan0", 555002, 8472, worker, PODNS, "eth0")
    assert plan.link == PodLink("eth0", "32:b9:59:6b:f0:d5", 1450, ip_interface("10.244.1.21/24"))
    assert plan.link.drop_subnet_route  # a /24: the kernel's subnet route goes
    default, subnet = FLANNEL_STYLE.routes
    assert plan.routes == (  # the route without a gateway first
        PlannedRoute(subnet, "eth0", socket.AF_INET, "10.244.1.0", 24, "", 2, 253),
        PlannedRoute(default, "eth0", socket.AF_INET, "0.0.0.0", 0, "10.244.1.1", 3, 0),
    )
    assert plan.neighbors == ()
    names = [step.name for step in setup_steps(plan)]
    assert names == [
        "create the pod netns",
        "check the pod netns",
        "add NOTRACK rules",
        "create vxlan0",
        "move vxlan0 into the pod netns",
        "configure eth0",
        "drop the subnet route",
        "add route 10.244.1.0/24",
        "add route 0.0.0.0/0",
    ]
    assert len(removals(plan)) == 3  # pod netns side, VM side, NOTRACK rules


def test_calico_style_plan_in_an_existing_netns() -> None:
    plan = plan_pod_network(CALICO_STYLE, pod_netns=PODNS, vm_netns="/vm", netns_exists=True)
    assert not plan.create_netns
    assert plan.link.mtu == 1440 and not plan.link.drop_subnet_route  # a /32
    assert [(r.route.dst, r.dst, r.dst_len, r.gateway) for r in plan.routes] == [
        ("169.254.1.1/32", "169.254.1.1", 32, ""),
        ("0.0.0.0/0", "0.0.0.0", 0, "169.254.1.1"),
    ]
    assert plan.neighbors == (
        PlannedNeighbor(CALICO_STYLE.neighbors[0], "eth0", "169.254.1.1", socket.AF_INET, 0x80),
    )
    names = [step.name for step in setup_steps(plan)]
    assert "create the pod netns" not in names and "drop the subnet route" not in names
    assert names[-1] == "add neighbor 169.254.1.1"


def test_mtu_and_devices_default_and_cap() -> None:
    unset = dataclasses.replace(
        FLANNEL_STYLE, mtu=0, routes=(Route(dst="203.0.113.0/24", gw="10.244.1.1"),)
    )
    plan = plan_pod_network(unset, pod_netns=PODNS, vm_netns=None, netns_exists=True)
    assert plan.link.mtu == 1450
    assert plan.routes[0].dev == "eth0" and plan.routes[0].proto == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"routes": (Route(dst="10.0.0.0/8", protocol="bgp"),)}, "unknown protocol 'bgp'"),
        ({"routes": (Route(dst="10.0.0.0/8", scope="far"),)}, "unknown scope 'far'"),
        ({"routes": (Route(dst="10.0.0.0/33"),)}, "route 10.0.0.0/33: "),
        ({"neighbors": (Neighbor("10.0.0.1", "ee:ee:ee:ee:ee:ee", "eth0", "odd"),)}, "'odd'"),
        ({"neighbors": (Neighbor("nope", "ee:ee:ee:ee:ee:ee"),)}, "neighbor nope: "),
        ({"interface": ""}, "interface is not specified"),
        ({"worker_node_ip": "x"}, "pod-network: "),
    ],
)
def test_a_bad_pod_network_fails_before_anything_is_built(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(PodNetworkError, match=message):
        plan_pod_network(
            dataclasses.replace(FLANNEL_STYLE, **change),  # type: ignore[arg-type]
            pod_netns=PODNS,
            vm_netns=None,
            netns_exists=True,
        )


def test_a_missing_netns_outside_the_netns_directories_is_not_created() -> None:
    with pytest.raises(PodNetworkError, match="pod network namespace /tmp/x does not exist"):
        plan_pod_network(FLANNEL_STYLE, pod_netns="/tmp/x", vm_netns=None, netns_exists=False)
    plan = plan_pod_network(FLANNEL_STYLE, pod_netns="/tmp/x", vm_netns=None, netns_exists=True)
    assert not plan.create_netns


def test_ipv6_only_pod_over_an_ipv4_underlay() -> None:
    # podip is the pod's IPv6 address; the tunnel (NOTRACK, VXLAN remote) stays on IPv4
    network = dataclasses.replace(
        FLANNEL_STYLE,
        pod_ip="fd00:10:244:1::21/64",
        routes=(
            Route(dst="::/0", gw="fe80::1", dev="eth0", protocol="boot"),
            Route(dst="fd00:10:244:1::/64", dev="eth0", protocol="kernel"),
        ),
        neighbors=(Neighbor(ip="fd00:10:244:1::99", hw_addr="02:00:00:00:00:99",
                            dev="eth0", state="permanent"),),
    )  # fmt: skip
    plan = plan_pod_network(network, pod_netns=PODNS, vm_netns=None, netns_exists=True)
    worker = IPv4Address("192.0.2.1")
    assert plan.notrack == NotrackRules(None, worker, 8472, 555002)
    assert plan.vxlan.remote == worker
    assert plan.link.address == ip_interface("fd00:10:244:1::21/64")
    assert plan.link.drop_subnet_route  # a /64: the kernel's prefix route goes, then returns
    default, prefix = network.routes
    assert plan.routes == (
        PlannedRoute(prefix, "eth0", socket.AF_INET6, "fd00:10:244:1::", 64, "", 2, 0),
        PlannedRoute(default, "eth0", socket.AF_INET6, "::", 0, "fe80::1", 3, 0),
    )
    assert plan.neighbors == (
        PlannedNeighbor(network.neighbors[0], "eth0", "fd00:10:244:1::99", socket.AF_INET6, 0x80),
    )
