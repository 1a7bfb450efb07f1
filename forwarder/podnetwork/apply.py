"""Applying a :class:`~forwarder.podnetwork.plan.PodNetworkPlan` as steps with undo, and
removing the pod network again. Blocking (netlink, ip/iptables): run it in a worker thread.

Removal deletes only VXLAN devices (never a foreign interface of the same name) and the
rules tagged with the tunnel's id, and counts a missing one as removed.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from forwarder.podnetwork.plan import PlannedNeighbor, PlannedRoute, PodLink, PodNetworkPlan
from podnetwork import links, notrack
from podnetwork.commands import run
from podnetwork.errors import PodNetworkError
from podnetwork.plan import VxlanDevice
from podnetwork.steps import Action, Step

log = logging.getLogger(__name__)

ESRCH = 3
IFA_F_NODAD = 0x02
RT_SCOPE_NOWHERE = 255


def _delete_vxlan(netns: str | None, name: str) -> None:
    with links.open_netns(netns) as ipr:
        index = links.find_index(ipr, name)
        if index is not None and links.is_vxlan(ipr, index):
            links.delete_index(ipr, index)


# ---------------------------------------------------------------- setup


def setup_steps(plan: PodNetworkPlan) -> list[Step]:
    dev, rules, pod_netns = plan.vxlan, plan.notrack, plan.pod_netns
    steps: list[Step] = []
    if plan.create_netns:
        steps.append(
            Step("create the pod netns", lambda: _create_netns(pod_netns),
                 lambda: _delete_netns(pod_netns))
        )  # fmt: skip
    steps += [
        Step("check the pod netns", lambda: _check_pod(pod_netns, dev.target_name)),
        notrack.notrack_step(rules),
        Step(
            f"create {dev.name}",
            lambda: _create(dev),
            lambda: _delete_vxlan(dev.netns, dev.name),
        ),
        Step(
            f"move {dev.name} into the pod netns",
            lambda: _move(dev),
            lambda: _delete_vxlan(dev.target_netns, dev.name),
        ),
        Step(
            f"configure {dev.target_name}",
            lambda: _configure(pod_netns, dev.name, plan.link),
            lambda: _delete_vxlan(pod_netns, dev.target_name),
        ),
    ]
    if plan.link.drop_subnet_route:
        steps.append(Step("drop the subnet route", lambda: _drop_subnet_route(plan)))
    steps += [_route_step(pod_netns, route) for route in plan.routes]
    steps += [_neighbor_step(pod_netns, neighbor) for neighbor in plan.neighbors]
    return steps


def _create_netns(path: str) -> None:
    run(["ip", "netns", "add", os.path.basename(path)])
    run(["ip", "link", "set", "lo", "up"], netns=path)
    log.info("pod network: created network namespace %s", path)


def _delete_netns(path: str) -> None:
    if os.path.exists(path):
        run(["ip", "netns", "delete", os.path.basename(path)])


def _check_pod(pod_netns: str, pod_if: str) -> None:
    """No foreign ``pod_if`` in the pod netns; ours from an earlier run of the forwarder goes."""
    with links.open_netns(pod_netns) as pod:
        existing = links.find_index(pod, pod_if)
        if existing is not None:
            if not links.is_vxlan(pod, existing):
                raise PodNetworkError(
                    f"interface {pod_if} already exists in {pod_netns} and is not a vxlan"
                )
            links.delete_index(pod, existing)


def _create(dev: VxlanDevice) -> None:
    with links.open_netns(dev.netns) as vm:
        stale = links.find_index(vm, dev.name)
        if stale is not None and links.is_vxlan(vm, stale):
            links.delete_index(vm, stale)
        links.create_vxlan(vm, dev.name, dev.remote, dev.vxlan_id, dev.port)


def _move(dev: VxlanDevice) -> None:
    with links.open_netns(dev.netns) as vm:
        index = links.find_index(vm, dev.name)
        if index is None:
            raise PodNetworkError(f"{dev.name} vanished before the move")
        links.move_link(vm, index, dev.target_netns)


def _configure(pod_netns: str, moved: str, link: PodLink) -> None:
    """Rename the moved device to the pod interface; MAC, MTU, address; bring it up."""
    with links.open_netns(pod_netns) as pod:
        index = links.find_index(pod, moved)
        if index is None:
            raise PodNetworkError(f"{moved} vanished after the move")
        pod.link("set", index=index, ifname=link.name)
        settings: dict[str, Any] = {"mtu": link.mtu}
        if link.mac:
            settings["address"] = link.mac
        pod.link("set", index=index, **settings)
        address = link.address
        extra: dict[str, Any] = {}
        if address.version == 6:
            # The CNI made sure on the worker that the address is unique on the pod's link;
            # DAD again here would hold it tentative (unusable) for a while after setup.
            extra["flags"] = IFA_F_NODAD
        pod.addr(
            "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen,
            **extra,
        )
        pod.link("set", index=index, state="up")


def _drop_subnet_route(plan: PodNetworkPlan) -> None:
    net = plan.link.address.network
    with links.open_netns(plan.pod_netns) as pod:
        try:
            pod.route(
                "del",
                dst=str(net.network_address),
                dst_len=net.prefixlen,
                oif=_require_index(pod, plan.link.name, plan.pod_netns),
                family=socket.AF_INET if net.version == 4 else socket.AF_INET6,
                scope=RT_SCOPE_NOWHERE,  # match any scope, as ip route del does
                proto=0,
            )
        except NetlinkError as exc:
            if exc.code != ESRCH:  # no such route
                raise


def _require_index(ipr: Any, name: str, pod_netns: str) -> int:
    index = links.find_index(ipr, name)
    if index is None:
        raise PodNetworkError(f"interface {name} not found in network namespace {pod_netns}")
    return index


def _route_step(pod_netns: str, planned: PlannedRoute) -> Step:
    route = planned.route

    def add() -> None:
        with links.open_netns(pod_netns) as pod:
            oif = links.find_index(pod, planned.dev)
            if oif is None:
                raise PodNetworkError(f"route {route.dst or 'default'}: no device {route.dev}")
            args: dict[str, Any] = {
                "oif": oif,
                "dst": planned.dst,
                "dst_len": planned.dst_len,
                "family": planned.family,
                "proto": planned.proto,
                "scope": planned.scope,
            }
            if planned.gateway:
                args["gateway"] = planned.gateway
            try:
                pod.route("add", **args)
            except NetlinkError as exc:
                raise PodNetworkError(
                    f"failed to add route {route.dst or 'default'} via {route.gw or '-'}"
                    f" dev {planned.dev} in {pod_netns}: {exc}"
                ) from None

    return Step(f"add route {route.dst or 'default'}", add)


def _neighbor_step(pod_netns: str, planned: PlannedNeighbor) -> Step:
    neighbor = planned.neighbor

    def add() -> None:
        with links.open_netns(pod_netns) as pod:
            oif = links.find_index(pod, planned.dev)
            if oif is None:
                raise PodNetworkError(f"neighbor {neighbor.ip}: no device {neighbor.dev}")
            try:
                pod.neigh(
                    "add",
                    dst=planned.address,
                    lladdr=neighbor.hw_addr,
                    ifindex=oif,
                    state=planned.state,
                    family=planned.family,
                )
            except NetlinkError as exc:
                raise PodNetworkError(
                    f"failed to add neighbor {neighbor.ip} lladdr {neighbor.hw_addr}"
                    f" dev {planned.dev} in {pod_netns}: {exc}"
                ) from None

    return Step(f"add neighbor {neighbor.ip}", add)


# ---------------------------------------------------------------- teardown


def removals(plan: PodNetworkPlan) -> list[Action]:
    """Removing the pod network (the pod netns itself stays: containers may live in it)."""
    dev = plan.vxlan
    return [
        lambda: _remove_from_pod(plan.pod_netns, (dev.target_name, dev.name)),
        lambda: _delete_vxlan(dev.netns, dev.name),
        lambda: notrack.remove_notrack(plan.notrack.vxlan_id, netns=plan.notrack.netns),
    ]


def _remove_from_pod(pod_netns: str, names: tuple[str, ...]) -> None:
    if not os.path.exists(pod_netns):
        return
    for name in names:
        _delete_vxlan(pod_netns, name)
