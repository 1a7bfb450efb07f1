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
from ipaddress import IPv4Address, IPv6Address

from adaptor.network import tunnel
from adaptor.network.allocator import VxlanIdAllocator, VxlanIdExhausted
from adaptor.network.discovery import PodReading, PodSubnet, read_host, read_pod
from adaptor.network.plan import plan_tunnel, tunnel_remote, tunnel_site
from adaptor.network.tunnel import translate
from podnetwork import steps
from podnetwork.errors import PodNetworkError
from protocols.apf import PodNetwork

log = logging.getLogger(__name__)


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
        pod_subnets: Sequence[PodSubnet] = (),
        external_net_via_pod_vm: bool = False,
    ) -> None:
        if not 0 < vxlan_port <= 65535:
            raise ValueError(f"vxlan port {vxlan_port} is out of range 1..65535")
        self.vxlan_port = vxlan_port
        self.pod_subnets = tuple(pod_subnets)
        self.external_net_via_pod_vm = external_net_via_pod_vm
        self.host_interface = host_interface or None
        self.host_netns = host_netns
        self.allocator = VxlanIdAllocator(vxlan_min_id)

    # ---------------------------------------------------------------- inspect

    async def inspect(self, sandbox_id: str, netns_path: str) -> PodNetwork:
        def read() -> PodNetwork:
            host = read_host(self.host_netns, self.host_interface)
            pod = read_pod(netns_path, "vxlan", self.pod_subnets)
            _log_unused(sandbox_id, pod)
            return dataclasses.replace(
                pod.network,
                worker_node_ip=host.worker_node_ip,
                dedicated=host.dedicated,
                external_net_via_pod_vm=self.external_net_via_pod_vm,
            )

        network = await asyncio.to_thread(translate, f"inspect {netns_path}", read)
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
        remote = tunnel_remote(sandbox_id, network, vm_ips)
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

    def _setup_sync(
        self,
        sandbox_id: str,
        netns_path: str,
        network: PodNetwork,
        remote: IPv4Address | IPv6Address,
    ) -> None:
        plan = plan_tunnel(network, netns_path, self.host_netns, remote)

        def undo_failed(step: steps.Step, exc: Exception) -> None:
            # the original error is the one to report
            log.warning("sandbox=%s: removing the half-built tunnel failed: %s", sandbox_id, exc)

        translate(
            f"sandbox {sandbox_id}: vxlan setup in {netns_path}",
            lambda: steps.apply(tunnel.setup_steps(plan), undo_failed),
        )

    # ---------------------------------------------------------------- teardown

    async def teardown(self, sandbox_id: str, netns_path: str, network: PodNetwork) -> None:
        await asyncio.to_thread(self._teardown_sync, sandbox_id, netns_path, network)
        log.info("sandbox=%s: vxlan tunnel id %d removed", sandbox_id, network.vxlan_id)

    def _teardown_sync(self, sandbox_id: str, netns_path: str, network: PodNetwork) -> None:
        """Remove every part of the tunnel that is still there; raise
        :class:`PodNetworkError` naming the parts that could not be removed."""
        if not network.vxlan_id:
            return
        site = tunnel_site(network, netns_path, self.host_netns)
        what = f"sandbox {sandbox_id}: vxlan teardown in {netns_path}"
        steps.remove_all([_guarded(what, removal) for removal in tunnel.removals(site)])

    # ---------------------------------------------------------------- restart

    def restore(self, sandbox_id: str, network: PodNetwork) -> None:
        if network.vxlan_id:
            self.allocator.restore(sandbox_id, network.vxlan_id)

    def release(self, sandbox_id: str) -> None:
        self.allocator.release(sandbox_id)


def _log_unused(sandbox_id: str, pod: PodReading) -> None:
    if pod.unused:
        log.warning(
            "sandbox=%s: dual-stack pod: only %s reaches the pod VM; %s not carried",
            sandbox_id,
            pod.network.pod_ip,
            ", ".join(str(a) for a in pod.unused),
        )


def _guarded(what: str, removal: steps.Action) -> steps.Action:
    return lambda: translate(what, removal)


class NoTunnelWorkerNetwork:
    """``tunnel_type="none"``: the pod network is read for apf.json when the netns exists
    (an empty one otherwise); nothing is built or removed."""

    async def inspect(self, sandbox_id: str, netns_path: str) -> PodNetwork:
        if not netns_path:
            return PodNetwork(tunnel_type="none")

        def read() -> PodNetwork:
            if not os.path.exists(netns_path):
                return PodNetwork(tunnel_type="none")
            pod = read_pod(netns_path, "none")
            _log_unused(sandbox_id, pod)
            return pod.network

        return await asyncio.to_thread(translate, f"inspect {netns_path}", read)

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
