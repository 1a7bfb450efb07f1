"""The worker end's plan: pure, computed from the pod network and the VM's addresses."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address

import pytest

from adaptor.network.plan import TunnelPlan, TunnelSite, plan_tunnel, tunnel_remote
from adaptor.network.tunnel import removals, setup_steps
from podnetwork.errors import PodNetworkError
from podnetwork.plan import NotrackRules, Redirect, VxlanDevice
from protocols.apf import PodNetwork

NETWORK = PodNetwork(
    tunnel_type="vxlan",
    pod_ip="10.244.1.21/24",
    interface="eth0",
    worker_node_ip="192.0.2.1/24",
    vxlan_id=555003,
    vxlan_port=8472,
)
VM = IPv4Address("192.0.2.11")


def test_the_plan_names_every_device_rule_and_redirect() -> None:
    plan = plan_tunnel(NETWORK, "/run/netns/pod", "/run/netns/worker", VM)
    assert plan == TunnelPlan(
        site=TunnelSite("/run/netns/worker", "/run/netns/pod", "eth0", 555003),
        notrack=NotrackRules("/run/netns/worker", VM, 8472, 555003),
        vxlan=VxlanDevice(
            netns="/run/netns/worker",
            name="ppvxlan555003",
            vxlan_id=555003,
            port=8472,
            remote=VM,
            target_netns="/run/netns/pod",
            target_name="vxlan1",
        ),
        redirects=(
            Redirect("/run/netns/pod", "eth0", "vxlan1"),
            Redirect("/run/netns/pod", "vxlan1", "eth0"),
        ),
    )


def test_steps_come_in_upstream_order_each_with_its_undo() -> None:
    plan = plan_tunnel(NETWORK, "/run/netns/pod", None, VM)
    steps = setup_steps(plan)
    assert [(s.name, s.undo is not None) for s in steps] == [
        ("check the pod netns", False),
        ("add NOTRACK rules", True),
        ("create ppvxlan555003", True),
        ("move ppvxlan555003 into the pod netns", True),
        ("rename ppvxlan555003 to vxlan1", True),
        ("redirect eth0 to vxlan1", True),
        ("redirect vxlan1 to eth0", False),  # goes with vxlan1
    ]
    # teardown: the pod netns side, the host side, the NOTRACK rules, each on its own
    assert len(removals(plan.site)) == 3


def test_the_remote_is_the_vm_address_or_its_second_for_a_dedicated_tunnel() -> None:
    second = IPv4Address("198.51.100.9")
    assert tunnel_remote("sb", NETWORK, [VM, second]) == VM
    dedicated = dataclasses.replace(NETWORK, dedicated=True)
    assert tunnel_remote("sb", dedicated, [VM, second]) == second
    with pytest.raises(PodNetworkError, match=r"has 1 IP address.*dedicated tunnel needs 2"):
        tunnel_remote("sb", dedicated, [VM])
    with pytest.raises(PodNetworkError, match="has 0 IP address"):
        tunnel_remote("sb", NETWORK, [])
    with pytest.raises(PodNetworkError, match="sandbox sb: pod network has no vxlan id/port"):
        tunnel_remote("sb", dataclasses.replace(NETWORK, vxlan_id=0), [VM])
