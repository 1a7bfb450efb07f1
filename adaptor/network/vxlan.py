"""The worker end of a pod's VXLAN tunnel, and the no-tunnel variant.

Setup (upstream's design): NOTRACK rules for the VM's VXLAN traffic in the host netns; a
VXLAN device created in the host netns (so its UDP socket lives there) under a temporary
name ``ppvxlan<id>``, moved into the pod netns and renamed ``vxlan1``; tc redirects that
join the pod's CNI interface and ``vxlan1`` at layer 2, so the pod's traffic is carried to
the pod VM, which owns the pod IP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from adaptor.network import netlink, tc
from adaptor.network.allocator import VxlanIdAllocator, VxlanIdExhausted
from adaptor.network.discovery import read_host, read_pod
from podnetwork import notrack
from podnetwork.errors import PodNetworkError
from protocols.apf import PodNetwork

log = logging.getLogger(__name__)

POD_VXLAN_INTERFACE = "vxlan1"
TEMP_PREFIX = "ppvxlan"  # + id: at most 15 characters, unique per id

T = TypeVar("T")


def _translate(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except PodNetworkError:
        raise
    except NetlinkError as exc:
        raise PodNetworkError(f"{what}: netlink error {exc.code}: {exc}") from None
    except OSError as exc:
        raise PodNetworkError(f"{what}: {exc}") from None


async def _undoable(do: Callable[[], None], undo: Callable[[], None]) -> None:
    """Run ``do`` in a thread; if the caller is cancelled, let it finish, then run ``undo``."""
    task = asyncio.ensure_future(asyncio.to_thread(do))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:

        async def settle() -> None:
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is None:
                await asyncio.to_thread(undo)

        await asyncio.shield(settle())
        raise


class VxlanWorkerNetwork:
    def __init__(
        self,
        *,
        vxlan_port: int = 4789,
        vxlan_min_id: int = 555000,
        host_interface: str | None = None,
        host_netns: str | None = None,
    ) -> None:
        if not 0 < vxlan_port <= 65535:
            raise ValueError(f"vxlan port {vxlan_port} is out of range 1..65535")
        self.vxlan_port = vxlan_port
        self.host_interface = host_interface or None
        self.host_netns = host_netns
        self.allocator = VxlanIdAllocator(vxlan_min_id)

    # ---------------------------------------------------------------- inspect

    async def inspect(self, sandbox_id: str, netns_path: str) -> PodNetwork:
        def read() -> PodNetwork:
            host = read_host(self.host_netns, self.host_interface)
            pod = read_pod(netns_path, "vxlan")
            return dataclasses.replace(
                pod, worker_node_ip=host.worker_node_ip, dedicated=host.dedicated
            )

        network = await asyncio.to_thread(_translate, f"inspect {netns_path}", read)
        try:
            vxlan_id = self.allocator.allocate(sandbox_id)
        except VxlanIdExhausted as exc:
            raise PodNetworkError(str(exc)) from None
        network = dataclasses.replace(
            network,
            vxlan_id=vxlan_id,
            vxlan_port=self.vxlan_port,
            index=vxlan_id - self.allocator.min_id,
        )
        log.info(
            "sandbox=%s: pod network %s on %s (mtu %d), worker %s, vxlan id %d",
            sandbox_id,
            network.pod_ip,
            network.interface,
            network.mtu,
            network.worker_node_ip,
            vxlan_id,
        )
        return network

    # ---------------------------------------------------------------- setup

    async def setup(
        self,
        sandbox_id: str,
        netns_path: str,
        network: PodNetwork,
        vm_ips: Sequence[IPv4Address | IPv6Address],
    ) -> None:
        remote = self._remote(sandbox_id, network, vm_ips)
        await _undoable(
            lambda: self._setup_sync(sandbox_id, netns_path, network, remote),
            lambda: self._teardown_sync(sandbox_id, netns_path, network),
        )
        log.info(
            "sandbox=%s: vxlan tunnel id %d to %s port %d set up in %s",
            sandbox_id,
            network.vxlan_id,
            remote,
            network.vxlan_port,
            netns_path,
        )

    def _remote(
        self,
        sandbox_id: str,
        network: PodNetwork,
        vm_ips: Sequence[IPv4Address | IPv6Address],
    ) -> IPv4Address | IPv6Address:
        if not network.vxlan_id or not network.vxlan_port:
            raise PodNetworkError(f"sandbox {sandbox_id}: pod network has no vxlan id/port")
        needed = 2 if network.dedicated else 1
        if len(vm_ips) < needed:
            raise PodNetworkError(
                f"sandbox {sandbox_id}: the pod VM has {len(vm_ips)} IP address(es),"
                f" the {'dedicated ' if network.dedicated else ''}tunnel needs {needed}"
            )
        return ip_address(vm_ips[needed - 1])

    def _setup_sync(
        self,
        sandbox_id: str,
        netns_path: str,
        network: PodNetwork,
        remote: IPv4Address | IPv6Address,
    ) -> None:
        try:
            _translate(
                f"sandbox {sandbox_id}: vxlan setup in {netns_path}",
                lambda: self._build(netns_path, network, remote),
            )
        except BaseException:
            try:
                self._teardown_sync(sandbox_id, netns_path, network)
            except Exception as cleanup_exc:  # the original error is the one to report
                log.warning(
                    "sandbox=%s: removing the half-built tunnel failed: %s",
                    sandbox_id,
                    cleanup_exc,
                )
            raise

    def _build(
        self, netns_path: str, network: PodNetwork, remote: IPv4Address | IPv6Address
    ) -> None:
        vni, port, pod_if = network.vxlan_id, network.vxlan_port, network.interface
        temp = f"{TEMP_PREFIX}{vni}"
        with netlink.open_netns(netns_path) as pod:
            netlink.require_link(pod, pod_if, netns_path)
            existing = netlink.find_link(pod, POD_VXLAN_INTERFACE)
            if existing is not None and not _is_ours(existing, vni):
                raise PodNetworkError(
                    f"{POD_VXLAN_INTERFACE} already exists in network namespace {netns_path}"
                    " and is not this sandbox's tunnel"
                )
            if existing is not None:  # left over from an earlier attempt
                netlink.delete_link(pod, POD_VXLAN_INTERFACE)
        notrack.add_notrack(remote, port, vni, netns=self.host_netns)
        with netlink.open_netns(self.host_netns) as host:
            stale = netlink.find_link(host, temp)
            if stale is not None and _is_ours(stale, vni):
                netlink.delete_link(host, temp)
            index = netlink.create_vxlan(host, temp, remote, vni, port)
            netlink.move_link(host, index, netns_path)
        with netlink.open_netns(netns_path) as pod:
            link = netlink.require_link(pod, temp, netns_path)
            pod.link("set", index=link["index"], ifname=POD_VXLAN_INTERFACE)
            pod.link("set", index=link["index"], state="up")
        tc.add_redirect(pod_if, POD_VXLAN_INTERFACE, netns=netns_path)
        tc.add_redirect(POD_VXLAN_INTERFACE, pod_if, netns=netns_path)

    # ---------------------------------------------------------------- teardown

    async def teardown(self, sandbox_id: str, netns_path: str, network: PodNetwork) -> None:
        await asyncio.to_thread(self._teardown_sync, sandbox_id, netns_path, network)
        log.info("sandbox=%s: vxlan tunnel id %d removed", sandbox_id, network.vxlan_id)

    def _teardown_sync(self, sandbox_id: str, netns_path: str, network: PodNetwork) -> None:
        vni = network.vxlan_id
        if not vni:
            return
        temp = f"{TEMP_PREFIX}{vni}"

        def remove() -> None:
            if netns_path and os.path.exists(netns_path):
                with netlink.open_netns(netns_path) as pod:
                    ours = netlink.find_link(pod, POD_VXLAN_INTERFACE)
                    if ours is not None and _is_ours(ours, vni):
                        if network.interface:
                            tc.remove_redirect(network.interface, netns=netns_path)
                        netlink.delete_link(pod, POD_VXLAN_INTERFACE)
                    moved = netlink.find_link(pod, temp)
                    if moved is not None and _is_ours(moved, vni):
                        netlink.delete_link(pod, temp)
            with netlink.open_netns(self.host_netns) as host:
                stale = netlink.find_link(host, temp)
                if stale is not None and _is_ours(stale, vni):
                    netlink.delete_link(host, temp)
            notrack.remove_notrack(vni, netns=self.host_netns)

        _translate(f"sandbox {sandbox_id}: vxlan teardown in {netns_path}", remove)

    # ---------------------------------------------------------------- restart

    def restore(self, sandbox_id: str, network: PodNetwork) -> None:
        if network.vxlan_id:
            self.allocator.restore(sandbox_id, network.vxlan_id)

    def release(self, sandbox_id: str) -> None:
        self.allocator.release(sandbox_id)


def _is_ours(link: Any, vxlan_id: int) -> bool:
    info = netlink.vxlan_info(link)
    return info is not None and info[0] == vxlan_id


class NoTunnelWorkerNetwork:
    """``tunnel_type="none"``: the pod network is read for apf.json when the netns exists
    (an empty one otherwise); nothing is built or removed."""

    async def inspect(self, sandbox_id: str, netns_path: str) -> PodNetwork:
        if not netns_path:
            return PodNetwork(tunnel_type="none")

        def read() -> PodNetwork:
            if not os.path.exists(netns_path):
                return PodNetwork(tunnel_type="none")
            return read_pod(netns_path, "none")

        return await asyncio.to_thread(_translate, f"inspect {netns_path}", read)

    async def setup(
        self,
        sandbox_id: str,
        netns_path: str,
        network: PodNetwork,
        vm_ips: Sequence[IPv4Address | IPv6Address],
    ) -> None:
        return None

    async def teardown(self, sandbox_id: str, netns_path: str, network: PodNetwork) -> None:
        return None

    def restore(self, sandbox_id: str, network: PodNetwork) -> None:
        return None

    def release(self, sandbox_id: str) -> None:
        return None
