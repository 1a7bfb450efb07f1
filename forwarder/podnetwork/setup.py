"""Building the pod network inside the pod VM (the forwarder does this before it listens).

The VM end of the tunnel: NOTRACK rules for the worker's VXLAN traffic; ``vxlan0`` created
in the VM's root netns (remote = worker, same id and port), moved into the pod netns and
renamed to the pod's interface name, with the pod's MAC, IP and routes, so containers in
the pod netns see exactly the network the CNI gave the pod on the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from forwarder.podnetwork import links
from podnetwork import notrack
from podnetwork.commands import run
from podnetwork.errors import PodNetworkError
from protocols.apf import PodNetwork

log = logging.getLogger(__name__)

VM_VXLAN_INTERFACE = "vxlan0"
MAX_MTU = 1450
DEFAULT_POD_NETNS = "/run/netns/podns"
_NETNS_DIRS = ("/run/netns", "/var/run/netns")


@dataclass(frozen=True, slots=True)
class _Plan:
    network: PodNetwork
    pod_netns: str
    vm_netns: str | None
    worker_ip: IPv4Address | IPv6Address


class PodNetworkHandle:
    """What :func:`setup_pod_network` built; ``await handle.teardown()`` removes it.

    Teardown deletes the pod interface and the NOTRACK rules. It keeps the pod netns even
    when setup created it, because containers may still live in it; teardown is idempotent.
    """

    def __init__(self, plan: _Plan | None) -> None:
        self._plan = plan

    @property
    def active(self) -> bool:
        return self._plan is not None

    async def teardown(self) -> None:
        plan = self._plan
        if plan is None:
            return
        await asyncio.to_thread(_teardown_sync, plan, False)
        log.info(
            "pod network %s: vxlan id %d in %s removed",
            plan.network.pod_ip,
            plan.network.vxlan_id,
            plan.pod_netns,
        )


async def setup_pod_network(
    network: PodNetwork,
    *,
    pod_netns: str = DEFAULT_POD_NETNS,
    host_interface: str | None = None,
    wait_timeout: float = 180.0,
    vm_netns: str | None = None,
) -> PodNetworkHandle:
    """Build the pod network described by ``network`` (the ``pod-network`` of apf.json).

    ``vm_netns`` is the path of the namespace that plays the VM's root namespace (``None``:
    this process's own, as in a real pod VM). Waits up to ``wait_timeout`` seconds for the
    VM's primary interface and its address. ``tunnel_type`` ``"none"`` builds nothing.
    On failure everything built so far is removed and :class:`PodNetworkError` is raised.
    """
    if network.tunnel_type == "none":
        log.info("pod network: tunnel type none, nothing to set up")
        return PodNetworkHandle(None)
    if network.tunnel_type != "vxlan":
        raise PodNetworkError(f"unknown tunnel type: {network.tunnel_type!r}")
    worker_ip = _validate(network)
    await _wait_for_vm_network(network, host_interface, wait_timeout, vm_netns)
    plan = _Plan(network=network, pod_netns=pod_netns, vm_netns=vm_netns, worker_ip=worker_ip)
    task = asyncio.ensure_future(asyncio.to_thread(_setup_sync, plan))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:

        async def settle() -> None:
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is None:
                await asyncio.to_thread(_teardown_sync, plan, False)

        await asyncio.shield(settle())
        raise
    log.info(
        "pod network %s on %s in %s: vxlan id %d to %s port %d",
        network.pod_ip,
        network.interface,
        pod_netns,
        network.vxlan_id,
        worker_ip,
        network.vxlan_port,
    )
    return PodNetworkHandle(plan)


def _validate(network: PodNetwork) -> IPv4Address | IPv6Address:
    if not network.interface:
        raise PodNetworkError("pod-network: interface is not specified")
    if not network.pod_ip:
        raise PodNetworkError("pod-network: podip is not specified")
    if not network.worker_node_ip:
        raise PodNetworkError("pod-network: worker-node-ip is not specified")
    if not network.vxlan_id or not network.vxlan_port:
        raise PodNetworkError("pod-network: vxlan-id and vxlan-port are required")
    try:
        ip_interface(network.pod_ip)
        return ip_interface(network.worker_node_ip).ip
    except ValueError as exc:
        raise PodNetworkError(f"pod-network: {exc}") from None


async def _wait_for_vm_network(
    network: PodNetwork, host_interface: str | None, timeout: float, vm_netns: str | None
) -> None:
    """Wait for the primary interface and its address (and the dedicated one when needed)."""
    deadline = time.monotonic() + timeout
    while True:
        problem = await asyncio.to_thread(_vm_network_problem, network, host_interface, vm_netns)
        if problem is None:
            return
        if problem.startswith("!"):
            raise PodNetworkError(problem[1:])
        if time.monotonic() >= deadline:
            raise PodNetworkError(f"timed out after {timeout:g}s: {problem}")
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _vm_network_problem(
    network: PodNetwork, host_interface: str | None, vm_netns: str | None
) -> str | None:
    """None when the VM network is ready; a reason otherwise ("!" prefix: give up now)."""
    try:
        with links.open_netns(vm_netns) as ipr:
            primary = links.primary_interface(ipr)
            if primary is None:
                return f"no IPv4 default route in {links.where(vm_netns)}"
            if links.first_address(ipr, primary) is None:
                return f"primary interface {primary} has no IP address yet"
            if network.dedicated:
                dedicated = host_interface or primary
                if dedicated == primary:
                    return f"!{dedicated} is not a dedicated interface"
                if links.first_address(ipr, dedicated) is None:
                    return f"dedicated interface {dedicated} has no IP address yet"
            return None
    except (OSError, NetlinkError) as exc:
        return f"!cannot read {links.where(vm_netns)}: {exc}"


def _setup_sync(plan: _Plan) -> None:
    created_netns = False
    try:
        created_netns = _ensure_netns(plan.pod_netns)
        _build(plan)
    except BaseException as exc:
        try:
            _teardown_sync(plan, created_netns)
        except Exception as cleanup_exc:
            log.warning(
                "pod network %s: removing the half-built network failed: %s",
                plan.network.pod_ip,
                cleanup_exc,
            )
        if isinstance(exc, NetlinkError | OSError):
            raise PodNetworkError(f"pod network setup in {plan.pod_netns} failed: {exc}") from None
        raise


def _ensure_netns(path: str) -> bool:
    """Create the pod netns (with lo up) if it does not exist; True if it was created."""
    if os.path.exists(path):
        return False
    directory, name = os.path.split(path)
    if directory not in _NETNS_DIRS or not name:
        raise PodNetworkError(f"pod network namespace {path} does not exist")
    run(["ip", "netns", "add", name])
    run(["ip", "link", "set", "lo", "up"], netns=path)
    log.info("pod network: created network namespace %s", path)
    return True


def _build(plan: _Plan) -> None:
    net = plan.network
    pod_if = net.interface
    with links.open_netns(plan.pod_netns) as pod:
        existing = links.find_index(pod, pod_if)
        if existing is not None:
            if not links.is_vxlan(pod, existing):
                raise PodNetworkError(
                    f"interface {pod_if} already exists in {plan.pod_netns} and is not a vxlan"
                )
            pod.link("del", index=existing)  # left over from an earlier run of the forwarder
    notrack.add_notrack(plan.worker_ip, net.vxlan_port, net.vxlan_id, netns=plan.vm_netns)
    group = "vxlan_group6" if plan.worker_ip.version == 6 else "vxlan_group"
    with links.open_netns(plan.vm_netns) as vm:
        stale = links.find_index(vm, VM_VXLAN_INTERFACE)
        if stale is not None and links.is_vxlan(vm, stale):
            vm.link("del", index=stale)
        vm.link(
            "add",
            ifname=VM_VXLAN_INTERFACE,
            kind="vxlan",
            vxlan_id=net.vxlan_id,
            vxlan_port=net.vxlan_port,
            **{group: str(plan.worker_ip)},
        )
        index = links.find_index(vm, VM_VXLAN_INTERFACE)
        assert index is not None
        links.move_link(vm, index, plan.pod_netns)
    with links.open_netns(plan.pod_netns) as pod:
        index = links.find_index(pod, VM_VXLAN_INTERFACE)
        if index is None:
            raise PodNetworkError(f"{VM_VXLAN_INTERFACE} vanished after the move")
        pod.link("set", index=index, ifname=pod_if)
        settings: dict[str, Any] = {"mtu": min(net.mtu, MAX_MTU) if net.mtu else MAX_MTU}
        if net.pod_hw_addr:
            settings["address"] = net.pod_hw_addr
        pod.link("set", index=index, **settings)
        pod_ip = ip_interface(net.pod_ip)
        pod.addr("add", index=index, address=str(pod_ip.ip), prefixlen=pod_ip.network.prefixlen)
        pod.link("set", index=index, state="up")
        if pod_ip.network.prefixlen != pod_ip.max_prefixlen:
            # As upstream: drop the kernel's subnet route (PTP/GKE CNIs need this); the
            # routes read on the worker put it back for ordinary CNIs.
            try:
                pod.route(
                    "del",
                    dst=str(pod_ip.network.network_address),
                    dst_len=pod_ip.network.prefixlen,
                    oif=index,
                    family=2 if pod_ip.version == 4 else 10,
                    scope=255,  # RT_SCOPE_NOWHERE: match any scope, as ip route del does
                    proto=0,
                )
            except NetlinkError as exc:
                if exc.code != 3:  # ESRCH: no such route
                    raise
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in pod.get_links()}
        by_name = {name: idx for idx, name in names.items()}
        # Routes without a gateway first: on-link gateways (Calico) must be reachable.
        ordered = [r for r in net.routes if not r.gw] + [r for r in net.routes if r.gw]
        for route in ordered:
            oif = by_name.get(route.dev or pod_if)
            if oif is None:
                raise PodNetworkError(f"route {route.dst or 'default'}: no device {route.dev}")
            try:
                pod.route(
                    "add",
                    **links.route_args(route.dst, route.gw, oif, route.protocol, route.scope),
                )
            except NetlinkError as exc:
                raise PodNetworkError(
                    f"failed to add route {route.dst or 'default'} via {route.gw or '-'}"
                    f" dev {route.dev or pod_if} in {plan.pod_netns}: {exc}"
                ) from None
        for neighbor in net.neighbors:
            oif = by_name.get(neighbor.dev or pod_if)
            if oif is None:
                raise PodNetworkError(f"neighbor {neighbor.ip}: no device {neighbor.dev}")
            address = ip_address(neighbor.ip)
            try:
                pod.neigh(
                    "add",
                    dst=str(address),
                    lladdr=neighbor.hw_addr,
                    ifindex=oif,
                    state=links.NEIGHBOR_STATES[neighbor.state],
                    family=2 if address.version == 4 else 10,
                )
            except NetlinkError as exc:
                raise PodNetworkError(
                    f"failed to add neighbor {neighbor.ip} lladdr {neighbor.hw_addr}"
                    f" dev {neighbor.dev or pod_if} in {plan.pod_netns}: {exc}"
                ) from None


def _teardown_sync(plan: _Plan, remove_netns: bool) -> None:
    net = plan.network
    try:
        if os.path.exists(plan.pod_netns):
            with links.open_netns(plan.pod_netns) as pod:
                for name in (net.interface, VM_VXLAN_INTERFACE):
                    index = links.find_index(pod, name) if name else None
                    if index is not None and links.is_vxlan(pod, index):
                        pod.link("del", index=index)
        with links.open_netns(plan.vm_netns) as vm:
            index = links.find_index(vm, VM_VXLAN_INTERFACE)
            if index is not None and links.is_vxlan(vm, index):
                vm.link("del", index=index)
    except (OSError, NetlinkError) as exc:
        raise PodNetworkError(f"pod network teardown in {plan.pod_netns} failed: {exc}") from None
    notrack.remove_notrack(net.vxlan_id, netns=plan.vm_netns)
    if remove_netns and os.path.exists(plan.pod_netns):
        run(["ip", "netns", "delete", os.path.basename(plan.pod_netns)])
