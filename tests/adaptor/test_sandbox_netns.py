"""A failed tunnel teardown against the real VXLAN worker network (real namespaces, VXLAN
devices and iptables rules): the daemon keeps it recorded, and a retry (the sweep's or the
next StopVM's) removes the device and the NOTRACK rules."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from ipaddress import IPv4Address, IPv6Address

import pytest

from adaptor.network import make_worker_network
from adaptor.network.base import WorkerNetwork
from adaptor.server import Daemon
from adaptor.states import SandboxState
from podnetwork.errors import PodNetworkError
from protocols.apf import PodNetwork
from tests.adaptor.conftest import FAST_RETRY, make_settings
from tests.adaptor.shim import Shim
from tests.fakes.cloud import FakeCloud
from tests.netns import NetnsPool, PodSlot, WorkerTopology, build_worker_topology, netns_pool

pytestmark = [pytest.mark.root, pytest.mark.netns]

__all__ = ["netns_pool"]  # the fixture

CHAINS = ("peerpod-OUTPUT", "peerpod-PREROUTING")


class FailingTeardowns:
    """The real worker network, except that the next ``failures`` teardowns fail before
    removing anything (as when ``ip`` or ``iptables`` cannot run)."""

    def __init__(self, real: WorkerNetwork) -> None:
        self.real = real
        self.failures = 0

    async def inspect(self, sandbox_id: str, netns_path: str) -> PodNetwork:
        return await self.real.inspect(sandbox_id, netns_path)

    async def setup(self, sandbox_id: str, netns_path: str, network: PodNetwork,
                    vm_ips: Sequence[IPv4Address | IPv6Address]) -> None:
        await self.real.setup(sandbox_id, netns_path, network, vm_ips)

    async def teardown(self, sandbox_id: str, netns_path: str, network: PodNetwork) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise PodNetworkError("injected tunnel teardown failure")
        await self.real.teardown(sandbox_id, netns_path, network)

    def restore(self, sandbox_id: str, network: PodNetwork) -> None:
        self.real.restore(sandbox_id, network)

    def release(self, sandbox_id: str) -> None:
        self.real.release(sandbox_id)


def tunnel_residue(topo: WorkerTopology, slot: PodSlot, vni: int) -> list[str]:
    """This pod's worker-side tunnel pieces still present (empty when clean)."""
    found = []
    if f"vxlan id {vni} " in slot.pod.ip("-d", "link", "show"):
        found.append("vxlan device in the pod netns")
    rules = topo.worker.run(["iptables", "-t", "raw", "-S"])
    tag = f"peerpod [vni:{vni}]"
    for chain in CHAINS:
        if any(line.startswith(f"-A {chain} ") and tag in line for line in rules.splitlines()):
            found.append(f"NOTRACK rule in {chain}")
    return found


@pytest.mark.parametrize("retry", ["sweep", "StopVM"])
async def test_a_failed_teardown_is_retried_until_the_tunnel_is_gone(
    netns_pool: NetnsPool, short_dir: str, cloud: FakeCloud, retry: str
) -> None:
    topo = build_worker_topology(netns_pool, pods=1)
    slot = topo.pods[0]
    network = FailingTeardowns(make_worker_network("vxlan", host_netns=topo.worker.path))
    settings = make_settings(short_dir, cloud.port, tunnel_type="vxlan",
                             orphan_sweep_interval=timedelta(0))
    async with Daemon(settings, cloud.provider, network=network,
                      delete_retry=FAST_RETRY) as daemon:
        assert daemon.manager is not None and daemon.sweeper is not None
        shim = Shim(settings.socket)
        await shim.create_vm("sb-real", netns=slot.pod.path)
        await shim.start_vm("sb-real")
        record = daemon.manager.record("sb-real")
        assert record is not None and record.vxlan_id
        vni = record.vxlan_id
        assert tunnel_residue(topo, slot, vni) == [
            "vxlan device in the pod netns", *(f"NOTRACK rule in {c}" for c in CHAINS)]

        network.failures = 1
        await shim.stop_vm("sb-real")
        assert cloud.provider.instances == {}
        # The tunnel is still there, and the sandbox remembers it.
        assert len(tunnel_residue(topo, slot, vni)) == 3
        record = daemon.manager.record("sb-real")
        assert record is not None and record.state is SandboxState.STOP_FAILED
        assert record.tunnel and record.vxlan_id == vni

        if retry == "sweep":
            assert (await daemon.sweeper.sweep()).stops_retried == ("sb-real",)
        else:
            await shim.stop_vm("sb-real")
        assert tunnel_residue(topo, slot, vni) == []
        assert daemon.manager.record("sb-real") is None
        # Its VXLAN id is free again: the next sandbox gets it.
        await shim.create_vm("sb-next", netns=slot.pod.path)
        record = daemon.manager.record("sb-next")
        assert record is not None and record.vxlan_id == vni
        await shim.stop_vm("sb-next")
