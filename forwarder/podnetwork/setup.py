"""Building the pod network inside the pod VM (the forwarder does this before it listens).

The VM end of the tunnel: NOTRACK rules for the worker's VXLAN traffic; ``vxlan0`` created
in the VM's root netns (remote = worker, same id and port), moved into the pod netns and
renamed to the pod's interface name, with the pod's MAC, IP and routes, so containers in
the pod netns see exactly the network the CNI gave the pod on the worker. What is built is
planned in ``forwarder.podnetwork.plan`` and applied in ``forwarder.podnetwork.apply``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from pyroute2.netlink.exceptions import NetlinkError

from forwarder.podnetwork import apply, external, links
from forwarder.podnetwork.external import ExternalLink
from forwarder.podnetwork.plan import MAX_MTU, PodNetworkPlan, plan_pod_network, validate
from podnetwork import steps
from podnetwork.errors import PodNetworkError
from protocols.apf import PodNetwork

__all__ = ["DEFAULT_POD_NETNS", "MAX_MTU", "PodNetworkHandle", "setup_pod_network"]

log = logging.getLogger(__name__)

DEFAULT_POD_NETNS = "/run/netns/podns"


class PodNetworkHandle:
    """What :func:`setup_pod_network` built; ``await handle.teardown()`` removes it.

    Teardown deletes the pod interface and the NOTRACK rules. It keeps the pod netns even
    when setup created it, because containers may still live in it. Teardown is idempotent:
    when a part cannot be removed it still removes the others, then raises
    :class:`PodNetworkError`; calling it again finishes the job.
    """

    def __init__(self, plan: PodNetworkPlan | None, ext: ExternalLink | None = None) -> None:
        self._plan = plan
        self.external = ext  # the VM's NIC moved into the pod netns (external network)

    @property
    def active(self) -> bool:
        return self._plan is not None

    async def teardown(self) -> None:
        plan = self._plan
        if plan is None:
            return
        await asyncio.to_thread(_teardown_sync, plan, self.external)
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
    validate(network)
    await _wait_for_vm_network(network, host_interface, wait_timeout, vm_netns)
    task = asyncio.ensure_future(asyncio.to_thread(_setup_sync, network, pod_netns, vm_netns))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:

        async def settle() -> None:
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is None:
                await asyncio.to_thread(_teardown_sync, *task.result())

        await asyncio.shield(settle())
        raise
    plan, ext = task.result()
    log.info(
        "pod network %s on %s in %s: vxlan id %d to %s port %d",
        network.pod_ip,
        network.interface,
        pod_netns,
        network.vxlan_id,
        plan.worker_ip,
        network.vxlan_port,
    )
    return PodNetworkHandle(plan, ext)


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


def _setup_sync(
    network: PodNetwork, pod_netns: str, vm_netns: str | None
) -> tuple[PodNetworkPlan, ExternalLink | None]:
    """Plan from what is observed now, then apply; on failure undo and raise. Then the
    external network, when asked for (its failure is logged, as upstream's)."""
    plan = plan_pod_network(
        network, pod_netns=pod_netns, vm_netns=vm_netns, netns_exists=os.path.exists(pod_netns)
    )

    def undo_failed(step: steps.Step, exc: Exception) -> None:
        log.warning(
            "pod network %s: removing the half-built network failed: %s", network.pod_ip, exc
        )

    try:
        steps.apply(apply.setup_steps(plan), undo_failed)
    except (NetlinkError, OSError) as exc:
        raise PodNetworkError(f"pod network setup in {pod_netns} failed: {exc}") from None
    if not network.external_net_via_pod_vm:
        return plan, None
    return plan, _setup_external(network, pod_netns, vm_netns)


def _setup_external(
    network: PodNetwork, pod_netns: str, vm_netns: str | None
) -> ExternalLink | None:
    """Upstream (podnetwork/podnode.go, ``podNode.Setup``) logs a failure here and goes on:
    the pod keeps its default route through the tunnel."""
    try:
        with links.open_netns(vm_netns) as ipr:
            primary = links.primary_interface(ipr)
        if primary is None:
            raise PodNetworkError(f"no IPv4 default route in {links.where(vm_netns)}")
        ext = external.attach(vm_netns, pod_netns, primary)
    except (PodNetworkError, NetlinkError, OSError) as exc:
        log.warning("pod network %s: failed to set up external network: %s",
                    network.pod_ip, exc)
        return None
    log.info("pod network %s: external network through %s (%s), default via %s",
             network.pod_ip, ext.name, ext.address, ext.gateway or ext.name)
    return ext


def _teardown_sync(plan: PodNetworkPlan, ext: ExternalLink | None = None) -> None:
    what = f"pod network teardown in {plan.pod_netns} failed"
    removals = apply.removals(plan)
    if ext is not None:
        removals.insert(0, lambda: external.detach(plan.vm_netns, plan.pod_netns, ext))
    steps.remove_all([_guarded(what, removal) for removal in removals])


def _guarded(what: str, removal: steps.Action) -> steps.Action:
    def run() -> None:
        try:
            removal()
        except (OSError, NetlinkError) as exc:
            raise PodNetworkError(f"{what}: {exc}") from None

    return run
